"""Model commands: convert an official checkpoint to a bundle, describe a model, export ONNX, fetch from the hub."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="official checkpoint.pth -> safetensors bundle (config.json + model.safetensors)")
    p.add_argument("checkpoint", help="the official GAIR checkpoint.pth (or any state dict with its key names)")
    p.add_argument("out_dir")
    p.add_argument("--convention", choices=("released", "legacy"), default="released",
                   help="NILI coordinate convention stored in the bundle (default: the released code's)")
    p.set_defaults(handler=_convert)

    p = sub.add_parser("info", help="describe a checkpoint, bundle or ONNX export")
    p.add_argument("model", nargs="?", help="path (default: $GAIR_CHECKPOINT or the hub)")
    p.set_defaults(handler=_info)

    p = sub.add_parser("export-onnx", help="export the RS, street-view and location encoders to ONNX")
    p.add_argument("model", help="bundle folder or official checkpoint.pth")
    p.add_argument("out_dir")
    p.add_argument("--opset", type=int, default=17)
    p.set_defaults(handler=_export)

    p = sub.add_parser("fetch", help="download the official checkpoint from the authors' hub (needs network)")
    p.set_defaults(handler=_fetch)


def _convert(args: argparse.Namespace) -> int:
    from ..model.checkpoint import convert_checkpoint

    model = convert_checkpoint(args.checkpoint, args.out_dir, args.convention)
    print(f"{model.load_report.summary()}\nwrote bundle {args.out_dir} (fingerprint {model.fingerprint})")
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..runtime.loading import describe_model, load_model

    print(json.dumps(describe_model(load_model(args.model, device="cpu")), indent=2))
    return 0


def _export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..model.onnx_export import export_onnx

    with tqdm(total=100, unit="%", desc="export-onnx") as bar:
        out = export_onnx(args.model, args.out_dir, opset=args.opset, progress=lambda f: bar.update(round(100 * f) - bar.n))
    print(f"wrote ONNX export {out}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from ..runtime.loading import fetch_official_checkpoint

    print(fetch_official_checkpoint())
    return 0
