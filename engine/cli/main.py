"""`python -m engine <command>`: one CLI for models, embedding pipelines, analysis and pretraining.

Each area registers its own subcommands (`register(subparsers)`; options come from engine.params); a handler returns
an exit code. One error path for every command: an error the user can fix (GAIRError) prints one line and exits 2;
Ctrl-C (SIGINT) or SIGTERM asks the running operation to stop, which leaves no output, prints "cancelled; no output was
written" and exits 128 + the signal: 130 for Ctrl-C, 143 for SIGTERM. A second signal interrupts at once (still
leaving no output: temp files are removed on the way out). An operation's paths are checked before any work (and
before its model is loaded): see engine.io.guard.
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
from ..io.guard import check_paths
from ..params import OPERATIONS

# relative names: the engine may be vendored under another name
COMMAND_MODULES = (".model", ".pipeline", ".analysis", ".service", ".evaluate", ".pretrain")
CANCELLED_MESSAGE = "cancelled; no output was written"
EXIT_ERROR, EXIT_CANCELLED = 2, 130  # 130 = 128 + SIGINT; SIGTERM exits 128 + 15 = 143
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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


class Interrupted(KeyboardInterrupt):
    """A stop signal (Ctrl-C or SIGTERM) that interrupts the command at once."""


@contextmanager
def cancel_on_interrupt(args: argparse.Namespace) -> Iterator[Callable[[], bool]]:
    """A cancel callback that turns true at the first Ctrl-C or SIGTERM, so an operation that polls it
    (`args.cancellable`, set by options.run) stops cleanly; otherwise, and at a second signal, the command is
    interrupted at once. `args.stop_signal` records the first signal (for the exit code)."""
    args.stop_signal = None
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    interrupted = threading.Event()

    def on_signal(signum, frame) -> None:
        if args.stop_signal is None:
            args.stop_signal = signum
        if interrupted.is_set() or not getattr(args, "cancellable", False):
            raise Interrupted
        interrupted.set()
        print("\nstopping…", file=sys.stderr)

    previous = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS}
    try:
        yield interrupted.is_set
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def check_operation_paths(args: argparse.Namespace) -> None:
    """Refuse outputs that would destroy an input or cannot be written, before the model loads (engine.io.guard)."""
    op = OPERATIONS.get(getattr(args, "operation", None) or "")
    if op is not None:
        check_paths(op, {p.name: getattr(args, p.name, None) for p in op.params})


def main(argv: list[str] | None = None) -> int:
    args = argparse.Namespace(stop_signal=None)
    try:
        args = build_parser().parse_args(argv)
        # the engine's own messages at INFO; libraries (rasterio's GDAL chatter) only from WARNING on, unless -v
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                            format="%(levelname)s %(message)s")
        if not args.verbose:
            logging.getLogger(__package__.rsplit(".", 1)[0]).setLevel(logging.INFO)
        with cancel_on_interrupt(args) as cancel:
            args.cancel = cancel
            check_operation_paths(args)
            return int(args.handler(args) or 0)
    except (Cancelled, KeyboardInterrupt):
        print(CANCELLED_MESSAGE, file=sys.stderr)
        signum = getattr(args, "stop_signal", None)
        return 128 + int(signum) if signum else EXIT_CANCELLED
    except GAIRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
