"""`python -m engine <command>`: one CLI for models, embedding pipelines and analysis.

Each area registers its own subcommands (`register(subparsers)`); a handler returns an exit code. Errors the user
can fix (GAIRError) print one clear line instead of a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import Cancelled, GAIRError

COMMAND_MODULES = (".model", ".pipeline", ".analysis", ".service", ".evaluate")  # relative: the engine may be vendored under another name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="GAIR embeddings: models, pipelines, analysis.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name, __package__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return int(args.handler(args) or 0)
    except Cancelled:
        print("cancelled; no output was written", file=sys.stderr)
        return 130
    except GAIRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
