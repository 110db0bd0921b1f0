"""Loading GAIR weights: the official checkpoint (strictly checked), our safetensors bundles, and the authors' hub.

The official loader silently skips missing and mismatched keys (`strict=False`), so a wrong file gives random
weights without a word. Here a missing or mismatched key is an error that lists them; keys the released checkpoint
carries from training are listed in a warning and ignored on purpose.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..config import GAIRConfig
from ..errors import GAIRError
from ..io.files import atomic_path
from ..io.guard import guarded

log = logging.getLogger(__name__)

HUB_REPO, HUB_FILE = "PingL/GAIR", "checkpoint.pth"
BUNDLE_CONFIG, BUNDLE_WEIGHTS, BUNDLE_FORMAT = "config.json", "model.safetensors", "gair-bundle"

# Keys the released checkpoint may carry from training, with why each is not part of the inference model.
TRAINING_ONLY_KEYS = {
    r"^rs_encoder_teacher\.": "frozen RS distillation teacher (training only)",
    r"^sv_encoder_teacher\.": "frozen street-view distillation teacher (training only)",
    r"^(rs|sv)_student_projector\.": "distillation projector (training only)",
    r"^ContrastLoss\.": "loss-module copy of the projections (training only)",
    r"^queue_for_rs_encoding$|^queue_ptr_rs$": "RS feature queue (training state)",
    r"^rs_encoder\.s2_encoder\.transformer\.norm_out\.": (
        "CROMA's final norm: the official GAIR inference does not apply it, so tokens match the official model"
    ),
}


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
            text += "; ignored " + "; ".join(f"{len(keys)} key(s) ({why}), e.g. {keys[0]}" for why, keys in reasons.items())
        return text


def _torch():
    import torch

    return torch


def resolve_device(device: str = "auto") -> str:
    torch = _torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GAIRError(f"device {device!r} requested but CUDA is not available; use device='cpu' or 'auto'")
    return device


def read_checkpoint_file(path: Path) -> dict:
    """torch.load with weights_only (plus argparse.Namespace, which MAE-style checkpoints store as `args`)."""
    torch = _torch()
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report any unpickling failure with the file name
        raise GAIRError(f"could not read checkpoint {path}: {exc}. Is it a PyTorch .pth file from GAIR?") from exc
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
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {'; '.join(mismatched[:12])}")
    if unknown and not allow_unknown:
        problems.append(f"{len(unknown)} unexpected key(s): {', '.join(unknown[:12])}")
    if problems:
        raise GAIRError(
            f"{source} does not match the GAIR architecture ({model.config.embed_dim}-d, {model.config.rs_depth} RS layers): "
            + " | ".join(problems)
            + ". Use the official GAIR checkpoint.pth or a bundle written by `python -m engine convert`."
        )
    for key in unknown:
        report.ignored[key] = "unknown key, ignored because allow_unknown=True"
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=True)
    report.loaded = len(expected)
    if report.ignored:
        warnings.warn(report.summary(), stacklevel=3)
    return report


def load_official(path: str | os.PathLike, config: GAIRConfig | None = None, allow_unknown: bool = False, dtype=None):
    """The official checkpoint.pth (or any state dict with its key names) -> GAIRModel on CPU (float32 default)."""
    from ..model import GAIRModel

    path = Path(path)
    state = read_checkpoint_file(path)
    model = GAIRModel(config or GAIRConfig())
    if dtype is not None:  # cast before loading so float64 weights stay exact
        model = model.to(dtype)
    model.load_report = apply_state_dict(model, state, str(path), allow_unknown)
    return model.eval()


def save_bundle(model, out_dir: str | os.PathLike, source: str = "") -> Path:
    """Write safetensors weights + config.json; config.json is written last, so its presence marks a whole bundle."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.invalidate_fingerprint()  # weights may have changed in place since it was last read (training)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / BUNDLE_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": BUNDLE_FORMAT})
    meta = {"format": BUNDLE_FORMAT, "version": 1, "fingerprint": model.fingerprint, "source": source,
            "config": model.config.to_dict()}
    with atomic_path(out / BUNDLE_CONFIG) as tmp:
        tmp.write_text(json.dumps(meta, indent=2))
    return out


@guarded
def convert_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, convention: str = "released",
                       allow_unknown: bool = False):
    """Official checkpoint.pth -> bundle folder, with the NILI convention to store; returns the loaded model."""
    from dataclasses import replace

    model = load_official(checkpoint, allow_unknown=allow_unknown)
    model.config = replace(model.config, nili_convention=convention)
    save_bundle(model, out_dir, source=str(checkpoint))
    return model


def read_bundle_meta(path: str | os.PathLike) -> dict:
    cfg_path = Path(path) / BUNDLE_CONFIG
    if not cfg_path.is_file():
        raise GAIRError(f"{path} is not a GAIR bundle (no {BUNDLE_CONFIG}); convert a checkpoint with `python -m engine convert`")
    meta = json.loads(cfg_path.read_text())
    if meta.get("format") != BUNDLE_FORMAT:
        raise GAIRError(f"{cfg_path} is not a GAIR bundle config (format={meta.get('format')!r})")
    return meta


def load_bundle(path: str | os.PathLike, dtype=None):
    from safetensors.torch import load_file

    from ..model import GAIRModel

    meta = read_bundle_meta(path)
    model = GAIRModel(GAIRConfig.from_dict(meta["config"]))
    if dtype is not None:
        model = model.to(dtype)
    weights = Path(path) / BUNDLE_WEIGHTS
    if not weights.is_file():
        raise GAIRError(f"bundle {path} has no {BUNDLE_WEIGHTS}; it was not written completely, convert again")
    model.load_report = apply_state_dict(model, load_file(str(weights)), str(path))
    return model.eval()


HUB_TIMEOUT_S = 5.0  # one metadata request decides whether the hub is reachable; never retried
FETCH_HINT = ("set a model (the official checkpoint.pth, a bundle folder or an ONNX export) in GAIR settings or "
              "GAIR_CHECKPOINT, or download it once where there is network with `python -m engine fetch`")


@dataclass(frozen=True)
class HubCheckpoint:
    """The official checkpoint on the authors' hub: its size (bytes, None when the hub does not say) and the
    cached copy when it was downloaded before."""

    repo: str
    filename: str
    size: int | None
    cached: Path | None = None

    def describe(self) -> str:
        size = f"{self.size / 1e9:.1f} GB" if self.size else "size unknown"
        return f"{self.filename} from the hub repo {self.repo} ({size})"


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now, not only when huggingface_hub was imported."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in ("1", "true", "yes", "on")


def _hub():
    try:
        import huggingface_hub
    except ImportError as exc:
        raise GAIRError("huggingface_hub is not installed, so the official checkpoint cannot be downloaded: "
                        f"`pip install huggingface_hub`, or {FETCH_HINT}") from exc
    return huggingface_hub


def cached_official_checkpoint(cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The official checkpoint from the hub cache, without any network access; None when not downloaded yet."""
    try:
        found = _hub().try_to_load_from_cache(HUB_REPO, HUB_FILE, cache_dir=cache_dir)
    except GAIRError:
        return None
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _check_reachable(endpoint: str, timeout: float) -> None:
    """One TCP connection to the hub with a short timeout (the HTTP client would try twice, with back-off).
    Behind a proxy the metadata request itself is the check."""
    import socket
    import urllib.request
    from urllib.parse import urlsplit

    url = urlsplit(endpoint)
    if urllib.request.getproxies().get(url.scheme) or not url.hostname:
        return
    socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()


def official_checkpoint_info(cache_dir: str | os.PathLike | None = None,
                             timeout: float = HUB_TIMEOUT_S) -> HubCheckpoint:
    """The cached checkpoint, else its size from one hub metadata request (short timeout, no retries).

    Offline (HF_HUB_OFFLINE, or the hub not answering within `timeout`) raises a GAIRError naming the fix.
    """
    cached = cached_official_checkpoint(cache_dir)
    if cached is not None:
        return HubCheckpoint(HUB_REPO, HUB_FILE, cached.stat().st_size, cached)
    hub = _hub()
    if hub_offline():
        raise GAIRError(f"no GAIR model is set and the official checkpoint is not downloaded; HF_HUB_OFFLINE is "
                        f"set, so it cannot be fetched from {HUB_REPO}: {FETCH_HINT}")
    try:
        _check_reachable(hub.constants.ENDPOINT, timeout)
        meta = hub.get_hf_file_metadata(hub.hf_hub_url(HUB_REPO, HUB_FILE), timeout=timeout, retry_on_errors=False)
    except Exception as exc:  # noqa: BLE001 - no network, DNS, proxy, timeout and hub errors all end here
        raise GAIRError(f"no GAIR model is set and the hub ({HUB_REPO}) cannot be reached "
                        f"({type(exc).__name__}: {str(exc)[:160]}): {FETCH_HINT}") from exc
    return HubCheckpoint(HUB_REPO, HUB_FILE, meta.size)


def fetch_official_checkpoint(cache_dir: str | os.PathLike | None = None, allow_download: bool = True,
                              timeout: float = HUB_TIMEOUT_S) -> Path:
    """The official checkpoint from the hub cache, downloading it there first when `allow_download`.

    The hub is asked once, quickly, for the file's size (logged before the download starts); offline it fails at
    once with what to do instead, and without `allow_download` it names the size and how to get the file.
    """
    info = official_checkpoint_info(cache_dir, timeout)
    if info.cached is not None:
        return info.cached
    if not allow_download:
        raise GAIRError(f"no GAIR model is set and the official checkpoint is not downloaded yet: downloading "
                        f"{info.describe()} needs your consent; {FETCH_HINT}")
    log.info(f"downloading {info.describe()} into the hub cache (once)")
    try:
        return Path(_hub().hf_hub_download(HUB_REPO, HUB_FILE, cache_dir=cache_dir, etag_timeout=timeout))
    except Exception as exc:  # noqa: BLE001 - network, auth and hub errors all end here
        raise GAIRError(f"could not download {info.describe()} ({type(exc).__name__}: {str(exc)[:160]}): "
                        f"{FETCH_HINT}") from exc


def _recorded_meta(folder: Path) -> dict:
    """config.json of a bundle or ONNX export folder, {} when there is none or it does not parse."""
    try:
        return json.loads((folder / BUNDLE_CONFIG).read_text()) if (folder / BUNDLE_CONFIG).is_file() else {}
    except (OSError, ValueError):
        return {}


def _training_steps(meta: dict) -> int | None:
    """Steps a bundle's config.json records: a "training" section, or engine.pretrain's "(..., N steps)" source."""
    training = meta.get("training") if isinstance(meta.get("training"), dict) else {}
    steps = training.get("steps", meta.get("steps"))
    if steps is None:
        found = re.search(r"(\d+) steps", str(meta.get("source") or ""))
        steps = int(found.group(1)) if found else None
    return None if steps is None else int(steps)


def describe_model(model) -> dict:
    """What a loaded model is, for people: description, where it was loaded from, dims, training steps (when its
    bundle records them), fingerprint, backend and device. Works for the torch and the ONNX backends."""
    report = getattr(model, "load_report", None)
    loaded_from = str(getattr(model, "path", None) or (report.source if report is not None else "") or "")
    folder = Path(loaded_from) if loaded_from and Path(loaded_from).is_dir() else None
    meta = _recorded_meta(folder) if folder is not None else {}
    origin = str(meta.get("source") or "")
    onnx = not hasattr(model, "load_report") and hasattr(model, "path")
    kind = ("ONNX export" if onnx else "GAIR bundle" if folder is not None
            else "official GAIR checkpoint" if loaded_from.endswith(HUB_FILE) else "GAIR checkpoint")
    steps = _training_steps(meta)
    if steps is None and origin and Path(origin).is_dir():  # an ONNX export of a bundle: the bundle records them
        steps = _training_steps(_recorded_meta(Path(origin)))
    cfg = model.config
    description = meta.get("description") or cfg.extra.get("description") or (
        f"{kind}, {cfg.embed_dim}-d" + (f", from {Path(origin).name}" if origin and not steps else "")
        + (f", pretrained {steps} steps" if steps else ""))
    return {
        "description": description,
        "kind": kind,
        "source": loaded_from,
        "origin": origin,
        "dims": cfg.embed_dim,
        "training_steps": None if steps is None else int(steps),
        "fingerprint": model.fingerprint,
        "backend": "onnx" if onnx else "torch",
        "device": str(getattr(model, "device", "cpu")),
        "bands": list(cfg.rs_bands),
        "crop_pixels": cfg.crop_pixels,
        "gsd_m": cfg.gsd_m,
        "crop_ground_m": cfg.crop_ground_m,
        "nili_convention": cfg.nili_convention,
    }


def resolve_model_path(path: str | os.PathLike | None) -> Path:
    """Explicit path, else $GAIR_CHECKPOINT, else the hub."""
    if path is None:
        env = os.environ.get("GAIR_CHECKPOINT")
        return Path(env) if env else fetch_official_checkpoint()  # logs the size before downloading
    return Path(path)


def load_model(path: str | os.PathLike | None = None, device: str = "auto", backend: str = "auto", dtype=None,
               allow_unknown_keys: bool = False, nili_convention: str | None = None):
    """Official checkpoint .pth, bundle folder or ONNX export folder -> a model with the GAIR methods.

    backend: "torch", "onnx" (numpy in/out, no torch import) or "auto" (ONNX files -> onnx; else torch when
    installed, else onnx). nili_convention overrides the stored one ("released" or "legacy", see engine.runtime.grid).
    """
    model = _load(path, device, backend, dtype, allow_unknown_keys)
    if nili_convention is not None:
        from dataclasses import replace

        model.config = replace(model.config, nili_convention=nili_convention)
    return model


def _load(path, device: str, backend: str, dtype, allow_unknown_keys: bool):
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

        return OnnxGAIR.load(p, device=device)
    model = load_bundle(p, dtype) if p.is_dir() else load_official(p, allow_unknown=allow_unknown_keys, dtype=dtype)
    return model.to(resolve_device(device))


def _default_backend() -> str:
    try:
        import torch  # noqa: F401
    except ImportError:
        return "onnx"
    return "torch"
