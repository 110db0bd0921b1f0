"""What every command shares: argparse options built from engine.params, the progress bar, model loading and the
engine call with the command's values."""
from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..params import Operation, Param, operation

ENGINE_PACKAGE = __package__.rsplit(".", 1)[0]  # "engine", or the vendored name
LOADING = ("model", "backend", "device")  # consumed by the model loader, not passed to the engine function
_TYPES = {"int": int, "float": float}
_METAVARS = {"points": ("X", "Y"), "extent": ("XMIN", "YMIN", "XMAX", "YMAX")}


def _help(param: Param) -> str:
    text = param.help or param.label
    if param.kind == "bool" and param.default is True:
        text = "do not " + text
    elif param.default is not None and param.default != () and param.kind != "bool" and not param.positional:
        text += f" (default: {param.default})"
    return text.replace("%", "%%")


def _checked(param: Param) -> Callable[[str], object]:
    """argparse `type`: convert, then check the definition's range and pattern (a bad value is a usage error)."""
    convert = _TYPES.get(param.kind, float if param.kind in _METAVARS else str)

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            kind = "a whole number" if convert is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        problem = None if param.kind in _METAVARS else param.check(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


def add_argument(parser: argparse.ArgumentParser, param: Param) -> None:
    """One Param as an argparse argument: dest = the engine keyword, default/choices/help from the definition."""
    if param.kind == "bool":
        action = "store_false" if param.default else "store_true"
        flag = param.flag or ("--no-" if param.default else "--") + param.name.replace("_", "-")
        parser.add_argument(flag, dest=param.name, action=action, default=param.default, help=_help(param))
        return
    kwargs: dict = {"help": _help(param), "type": _checked(param) if not param.choices else str}
    if param.choices:
        kwargs["choices"] = param.choices + param.expert_choices
    if param.kind in _METAVARS:
        kwargs["nargs"], kwargs["metavar"] = len(_METAVARS[param.kind]), _METAVARS[param.kind]
    if param.positional:
        if param.optional or param.repeat:
            kwargs["nargs"] = "*" if param.optional and param.repeat else "+" if param.repeat else "?"
        parser.add_argument(param.name, metavar=param.option, default=param.default, **kwargs)
        return
    if param.repeat:
        kwargs["action"] = "append"
    if not param.choices:
        kwargs.setdefault("metavar", param.option.lstrip("-").upper().replace("-", "_"))
    parser.add_argument(param.option, dest=param.name, default=None if param.repeat else param.default,
                        required=not param.optional and param.default is None, **kwargs)


def add_operation(subparsers, op_id: str, handler: Callable[[argparse.Namespace], int],
                  description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand for an operation: its CLI params in definition order, plus --quiet; `handler(args)` runs it."""
    op = operation(op_id)
    parser = subparsers.add_parser(op.command, help=op.summary.replace("%", "%%"),
                                   description=(description or op.help).replace("%", "%%"))
    for param in op.params:
        if param.cli:
            add_argument(parser, param)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=handler, operation=op.id)
    return parser


def values(args: argparse.Namespace, op: Operation | str) -> dict:
    """The engine keyword arguments of `op` from parsed args (repeated options -> lists, pairs -> tuples)."""
    op = operation(op) if isinstance(op, str) else op
    out = {}
    for param in op.params:
        if not param.cli or param.name in LOADING:
            continue
        value = getattr(args, param.name)
        if param.kind in _METAVARS and value is not None:
            value = [tuple(v) for v in value] if param.repeat else tuple(value)
        elif param.repeat and value is None:
            value = param.default
        out[param.name] = value
    return out


def call(op: Operation | str, **kwargs):
    """Run the engine function of `op` (imported lazily: `engine --help` stays fast and torch-free)."""
    return _function(operation(op) if isinstance(op, str) else op)(**kwargs)


def _function(op: Operation) -> Callable:
    module, function = op.function.split(":")
    return getattr(importlib.import_module(f"{ENGINE_PACKAGE}.{module}"), function)


def load_model(args: argparse.Namespace, device: str | None = None):
    """The model named by --model/--backend/--device (default: $GAIR_CHECKPOINT, else the hub)."""
    from ..runtime.loading import load_model as load

    return load(args.model, device=device or args.device, backend=args.backend)


@contextmanager
def progress(args: argparse.Namespace, label: str | None = None, enabled: bool = True) -> Iterator:
    """A progress callback (fractions 0..1) drawing a tqdm bar on stderr from its first call (None with --quiet)."""
    if getattr(args, "quiet", False) or not enabled:
        yield None
        return
    from tqdm import tqdm

    bars = []

    def update(fraction: float) -> None:
        if not bars:
            bars.append(tqdm(total=100, desc=label or args.command, file=sys.stderr, dynamic_ncols=True, leave=False,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}"))
        bars[0].update(max(0.0, round(min(max(fraction, 0.0), 1.0) * 100, 1) - bars[0].n))

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


def run(args: argparse.Namespace, **overrides):
    """The operation of this subcommand with its values, progress bar and the Ctrl-C cancel; returns its result."""
    op = operation(args.operation)
    kwargs = values(args, op)
    kwargs.update(overrides)
    accepted = inspect.signature(_function(op)).parameters
    args.cancellable = "cancel" in accepted
    with progress(args, enabled="progress" in accepted) as bar:
        callbacks = {"progress": bar, "cancel": getattr(args, "cancel", None)}
        return call(op, **kwargs, **{k: v for k, v in callbacks.items() if k in accepted})
