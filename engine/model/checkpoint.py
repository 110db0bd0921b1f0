"""Reading and writing torch weights: the official checkpoint (strictly checked) and our safetensors bundles.

The official loader silently skips missing and mismatched keys (`strict=False`), so a wrong file gives random
weights without a word. Here a missing or mismatched key is an error that lists them; keys the released checkpoint
carries from training are listed in a warning and ignored on purpose. engine.runtime.loading.load_model picks the
format and backend; this module is its torch side.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..config import GAIRConfig
from ..errors import GAIRError
from ..io.files import atomic_path
from ..io.guard import guarded
from ..io.read_errors import check_readable_file, one_line
from ..runtime.loading import BUNDLE_CONFIG, BUNDLE_FORMAT, BUNDLE_WEIGHTS, read_bundle_meta
from .gair import GAIRModel

# Keys the released checkpoint may carry from training, with why each is not part of the inference model.
TRAINING_ONLY_KEYS = {
    r"^rs_encoder_teacher\.": "frozen RS distillation teacher (training only)",
    r"^sv_encoder_teacher\.": "frozen street-view distillation teacher (training only)",
    r"^(rs|sv)_student_projector\.": "distillation projector (training only)",
    r"^ContrastLoss\.": "loss-module copy of the projections (training only)",
    r"^queue_for_rs_encoding$|^queue_ptr_rs$": "RS feature queue (training state)",
    r"^rs_encoder\.s2_encoder\.transformer\.norm_out\.": (
        "CROMA's final norm: the official GAIR inference does not apply it, so tokens match the official model "
        "(GAIRConfig.rs_final_norm=True applies it)"
    ),
}
FINAL_NORM_PREFIX = "rs_encoder.s2_encoder.transformer.norm_out."


@dataclass
class LoadReport:
    source: str
    loaded: int = 0
    ignored: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        text = f"loaded {self.loaded} tensors from {self.source}"
        if self.ignored:
            reasons: dict[str, list[str]] = {}
            for key, why in self.ignored.items():
                reasons.setdefault(why, []).append(key)
            text += "; ignored " + "; ".join(f"{len(keys)} key(s) ({why}), e.g. {keys[0]}"
                                             for why, keys in reasons.items())
        return text


def resolve_device(device: str = "auto") -> str:
    """'auto' -> cuda when available, else cpu; an explicit CUDA device must exist."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GAIRError(f"device {device!r} requested but CUDA is not available; use device='cpu' or 'auto'")
    return device


def load_torch_file(path: str | os.PathLike, what: str = "checkpoint", hint: str = "") -> object:
    """The one way the engine reads a PyTorch file (checkpoints, pretraining state, CROMA and GeoCLIP weights):
    torch.load on CPU with weights_only, i.e. tensors, containers and argparse.Namespace (which MAE-style checkpoints
    store as `args`), never arbitrary pickled code. `what` names the file in errors, `hint` ends them."""
    path = Path(path)
    if not os.path.lexists(path):
        raise GAIRError(f"{what} {path} not found")
    check_readable_file(path, what)  # not a regular file, permission denied: one line each
    if path.stat().st_size == 0:
        raise GAIRError(f"{what} {path} is empty (0 bytes); download or copy it again")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report any unpickling failure with the file name
        raise GAIRError(f"could not read {what} {path} (damaged, cut short, or not a PyTorch file: "
                        f"{one_line(exc, 160)}){hint}") from exc


def read_checkpoint_file(path: Path) -> dict:
    """The model state dict of a GAIR checkpoint ({'model': state_dict} or a bare one; DDP's `module.` dropped)."""
    obj = load_torch_file(path, "checkpoint", "; is it a GAIR checkpoint .pth? download or copy it again")
    state = obj["model"] if isinstance(obj, dict) and "model" in obj else obj
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise GAIRError(f"{path} holds no state dict (expected {{'model': state_dict}} or a bare state dict)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def apply_state_dict(model, state: dict, source: str, allow_unknown: bool = False) -> LoadReport:
    """Load `state` into `model` strictly: missing/mismatched keys are errors; training-only keys are reported."""
    expected = model.state_dict()
    report = LoadReport(source)
    unknown, mismatched = [], []
    for key, value in state.items():
        if key in expected:
            if tuple(value.shape) != tuple(expected[key].shape):
                mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key].shape)}")
            continue
        why = next((w for pattern, w in TRAINING_ONLY_KEYS.items() if re.search(pattern, key)), None)
        if why is None:
            unknown.append(key)
        else:
            report.ignored[key] = why
    missing = [k for k in expected if k not in state]
    fresh_norm = [k for k in missing if k.startswith(FINAL_NORM_PREFIX)]  # rs_final_norm on, file without norm_out
    missing = [k for k in missing if k not in fresh_norm]
    problems = []
    if missing:
        more = " ..." if len(missing) > 12 else ""
        problems.append(f"{len(missing)} missing key(s): {', '.join(missing[:12])}{more}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {'; '.join(mismatched[:12])}")
    if unknown and not allow_unknown:
        problems.append(f"{len(unknown)} unexpected key(s): {', '.join(unknown[:12])}")
    if problems:
        raise GAIRError(
            f"{source} does not match the GAIR architecture "
            f"({model.config.embed_dim}-d, {model.config.rs_depth} RS layers): "
            + " | ".join(problems)
            + ". Use the official GAIR checkpoint.pth or a bundle written by `python -m engine convert`."
        )
    for key in unknown:
        report.ignored[key] = "unknown key, ignored because allow_unknown=True"
    for key in fresh_norm:
        report.ignored[key] = "not in the file: rs_final_norm starts as a plain LayerNorm (weight 1, bias 0)"
    model.load_state_dict({**{k: expected[k] for k in fresh_norm}, **{k: v for k, v in state.items() if k in expected}},
                          strict=True)
    report.loaded = len(expected) - len(fresh_norm)
    if report.ignored:
        warnings.warn(report.summary(), stacklevel=3)
    return report


def load_official(path: str | os.PathLike, config: GAIRConfig | None = None, allow_unknown: bool = False,
                  dtype=None) -> GAIRModel:
    """The official checkpoint.pth (or any state dict with its key names) -> GAIRModel on CPU (float32 default).

    config=GAIRConfig(rs_final_norm=True) applies CROMA's `norm_out` from the file (the authors' training form)."""
    path = Path(path)
    state = read_checkpoint_file(path)
    model = GAIRModel(config or GAIRConfig())
    if dtype is not None:  # cast before loading so float64 weights stay exact
        model = model.to(dtype)
    model.load_report = apply_state_dict(model, state, str(path), allow_unknown)
    return model.eval()


def save_bundle(model, out_dir: str | os.PathLike, source: str = "") -> Path:
    """Write safetensors weights + config.json; config.json is written last, so its presence marks a whole bundle."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.invalidate_fingerprint()  # weights may have changed in place since it was last read (training)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / BUNDLE_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": BUNDLE_FORMAT})
    meta = {"format": BUNDLE_FORMAT, "version": 1, "fingerprint": model.fingerprint, "source": source,
            "config": model.config.to_dict(), "nerf_fn_trained": bool(getattr(model, "nerf_fn_trained", False))}
    with atomic_path(out / BUNDLE_CONFIG) as tmp:
        tmp.write_text(json.dumps(meta, indent=2))
    return out


@guarded
def convert_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, convention: str = "released",
                       allow_unknown: bool = False, rs_final_norm: bool = False):
    """Official checkpoint.pth -> bundle folder, with the NILI convention to store; returns the loaded model.

    rs_final_norm: keep and apply CROMA's final norm (a different embedding space from the released inference)."""
    model = load_official(checkpoint, GAIRConfig(rs_final_norm=rs_final_norm), allow_unknown=allow_unknown)
    model.config = replace(model.config, nili_convention=convention)
    save_bundle(model, out_dir, source=str(checkpoint))
    return model


def load_bundle(path: str | os.PathLike, dtype=None) -> GAIRModel:
    """A bundle folder written by save_bundle -> GAIRModel on CPU (float32, or `dtype`)."""
    meta = read_bundle_meta(path)
    model = GAIRModel(GAIRConfig.from_dict(meta["config"]))
    if dtype is not None:
        model = model.to(dtype)
    weights = Path(path) / BUNDLE_WEIGHTS
    if not weights.exists():
        raise GAIRError(f"bundle {path} has no {BUNDLE_WEIGHTS}; it was not written completely, convert again")
    check_readable_file(weights, "model weights")
    try:
        state = load_file(str(weights))
    except Exception as exc:  # noqa: BLE001 - safetensors reports damage with its own exception types
        raise GAIRError(f"could not read {weights}: damaged or cut short ({one_line(exc, 160)}); convert the "
                        f"checkpoint again, or copy the bundle again") from exc
    model.load_report = apply_state_dict(model, state, str(path))
    model.nerf_fn_trained = bool(meta.get("nerf_fn_trained", False))  # absent: written before it was recorded
    return model.eval()




def load_torch_model(path: Path, device: str = "auto", dtype=None, allow_unknown_keys: bool = False) -> GAIRModel:
    """The torch side of engine.load_model: a bundle folder or an official checkpoint, on `device`."""
    if path.is_dir():
        model = load_bundle(path, dtype)
    else:
        model = load_official(path, allow_unknown=allow_unknown_keys, dtype=dtype)
    return model.to(resolve_device(device))
