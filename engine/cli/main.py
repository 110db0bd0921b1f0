"""`python -m engine <command>`: one CLI for models, embedding pipelines, analysis and pretraining.

Each area registers its own subcommands (`register(subparsers)`; options come from engine.params); a handler returns
an exit code. One error path for every command: an error the user can fix (GAIRError) prints one line and exits 2;
Ctrl-C asks the running operation to stop, which leaves no output, and exits 130.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import Cancelled, GAIRError

# relative names: the engine may be vendored under another name
COMMAND_MODULES = (".model", ".pipeline", ".analysis", ".service", ".evaluate")
CANCELLED_MESSAGE = "cancelled; no output was written"
EXIT_ERROR, EXIT_CANCELLED = 2, 130


class Parser(argparse.ArgumentParser):
    """Usage errors as the one-line `error:` of every other problem (exit 2), with where to read more."""

    def error(self, message: str):
        self.exit(EXIT_ERROR, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m engine", description="GAIR embeddings: models, pipelines, analysis.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name, __package__).register(sub)
    return parser


@contextmanager
def cancel_on_interrupt(args: argparse.Namespace) -> Iterator[Callable[[], bool]]:
    """A cancel callback that turns true at the first Ctrl-C, so an operation that polls it (`args.cancellable`,
    set by options.run) stops cleanly; otherwise, and at a second Ctrl-C, the command is interrupted at once."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    interrupted = threading.Event()

    def on_sigint(signum, frame) -> None:
        if interrupted.is_set() or not getattr(args, "cancellable", False):
            raise KeyboardInterrupt
        interrupted.set()
        print("\nstopping…", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield interrupted.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # the engine's own messages at INFO; libraries (rasterio's GDAL chatter) only from WARNING on, unless -v
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:
        logging.getLogger(__package__.rsplit(".", 1)[0]).setLevel(logging.INFO)
    try:
        with cancel_on_interrupt(args) as cancel:
            args.cancel = cancel
            return int(args.handler(args) or 0)
    except (Cancelled, KeyboardInterrupt):
        print(CANCELLED_MESSAGE, file=sys.stderr)
        return EXIT_CANCELLED
    except GAIRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
