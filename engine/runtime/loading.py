"""Which model a path names, and loading it on the right backend (torch-free: the ONNX path never imports torch).

A path is the official checkpoint .pth, a bundle folder (safetensors + config.json) or an ONNX export folder;
none means $GAIR_CHECKPOINT, else the authors' hub. The torch formats are read by engine.model.checkpoint.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
from dataclasses import replace
from pathlib import Path

from ..errors import GAIRError

log = logging.getLogger(__name__)

HUB_REPO, HUB_FILE = "PingL/GAIR", "checkpoint.pth"
# The torch backend's loader, imported by name and only when that backend is asked for: nothing in engine/runtime
# imports torch or engine/model, so an ONNX-only install runs load_model.
TORCH_LOADER = "..model.checkpoint"
BUNDLE_CONFIG, BUNDLE_WEIGHTS, BUNDLE_FORMAT = "config.json", "model.safetensors", "gair-bundle"


def read_meta(folder: str | os.PathLike, fmt: str, what: str, hint: str) -> dict:
    """config.json of a bundle or ONNX export folder (format `fmt`, config, fingerprint); one clear error otherwise."""
    cfg_path = Path(folder) / BUNDLE_CONFIG
    if not cfg_path.is_file():
        raise GAIRError(f"{folder} is not {what} (no {BUNDLE_CONFIG}); {hint}")
    try:
        meta = json.loads(cfg_path.read_text())
    except ValueError as exc:
        raise GAIRError(f"{cfg_path} is not valid JSON ({exc}); {hint}") from exc
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != fmt:
        raise GAIRError(f"{cfg_path} has format {found!r}, not {fmt!r}: this folder is not {what}; {hint}")
    if not isinstance(meta.get("config"), dict) or not isinstance(meta.get("fingerprint"), str):
        raise GAIRError(f"{cfg_path} lacks its config or fingerprint; {hint}")
    return meta


def read_bundle_meta(path: str | os.PathLike) -> dict:
    """config.json of a bundle folder (format, fingerprint, source, config)."""
    return read_meta(path, BUNDLE_FORMAT, "a GAIR bundle", "convert a checkpoint with `python -m engine convert`")


def fetch_official_checkpoint(cache_dir: str | None = None) -> Path:
    """Download the official checkpoint from the authors' hub (cached); a clear error when offline."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise GAIRError("huggingface_hub is not installed; `pip install huggingface_hub`, or set GAIR_CHECKPOINT") from exc
    try:
        return Path(hf_hub_download(HUB_REPO, HUB_FILE, cache_dir=cache_dir))
    except Exception as exc:  # noqa: BLE001 - network, auth and hub errors all end here
        raise GAIRError(
            f"could not download {HUB_FILE} from the hub repo {HUB_REPO} ({type(exc).__name__}: {exc}). "
            "Without network access, download it elsewhere and set GAIR_CHECKPOINT=/path/checkpoint.pth "
            "or pass the path (a .pth checkpoint or a bundle folder)."
        ) from exc


def resolve_model_path(path: str | os.PathLike | None) -> Path:
    """Explicit path, else $GAIR_CHECKPOINT, else the hub."""
    if path is None:
        env = os.environ.get("GAIR_CHECKPOINT")
        return Path(env) if env else fetch_official_checkpoint()
    return Path(path)


def load_model(path: str | os.PathLike | None = None, device: str = "auto", backend: str = "auto", dtype=None,
               allow_unknown_keys: bool = False, nili_convention: str | None = None):
    """Official checkpoint .pth, bundle folder or ONNX export folder -> a GAIRModelLike (engine.runtime.protocol).

    backend: "torch", "onnx" (numpy in/out, no torch import) or "auto" (ONNX files -> onnx; else torch when
    installed, else onnx). nili_convention overrides the stored one ("released" or "legacy", see engine.runtime.grid).
    """
    p = resolve_model_path(path)
    if not p.exists():
        raise GAIRError(f"model path {p} does not exist; give a GAIR checkpoint.pth, a bundle folder or an ONNX export")
    if backend not in ("auto", "torch", "onnx"):
        raise GAIRError(f"backend must be auto, torch or onnx, got {backend!r}")
    if backend == "auto":
        has_onnx = p.suffix == ".onnx" or (p.is_dir() and any(p.glob("*.onnx")))
        backend = "onnx" if has_onnx and not (p / BUNDLE_WEIGHTS).is_file() else _default_backend()
    if backend == "onnx":
        from .onnx_model import OnnxGAIR

        model = OnnxGAIR.load(p, device=device)
    else:
        torch_loader = importlib.import_module(TORCH_LOADER, __package__)
        model = torch_loader.load_torch_model(p, device, dtype, allow_unknown_keys)
    if nili_convention is not None:
        model.config = replace(model.config, nili_convention=nili_convention)
    return model


def _default_backend() -> str:
    return "torch" if importlib.util.find_spec("torch") is not None else "onnx"
