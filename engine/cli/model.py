"""Model commands: convert an official checkpoint to a bundle, describe a model, export ONNX, fetch from the hub."""
from __future__ import annotations

import argparse
import json

from .options import add_operation, run


def register(sub: argparse._SubParsersAction) -> None:
    add_operation(sub, "convert_checkpoint", _convert)
    add_operation(sub, "info", _info)
    add_operation(sub, "export_onnx", _export)
    add_operation(sub, "fetch", _fetch)


def _convert(args: argparse.Namespace) -> int:
    model = run(args)
    print(f"{model.load_report.summary()}\nwrote bundle {args.out_dir} (fingerprint {model.fingerprint})")
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..runtime.loading import describe_model, load_model

    print(json.dumps(describe_model(load_model(args.path, device="cpu")), indent=2))
    return 0


def _export(args: argparse.Namespace) -> int:
    print(f"wrote ONNX export {run(args)}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    print(run(args))
    return 0
