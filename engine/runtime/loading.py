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
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import GAIRConfig
from ..errors import GAIRError
from ..io.read_errors import one_line, permission_error

log = logging.getLogger(__name__)

HUB_REPO, HUB_FILE = "PingL/GAIR", "checkpoint.pth"
# The torch backend's loader, imported by name and only when that backend is asked for: nothing in engine/runtime
# imports torch or engine/model, so an ONNX-only install runs load_model.
TORCH_LOADER = "..model.checkpoint"
BUNDLE_CONFIG, BUNDLE_WEIGHTS, BUNDLE_FORMAT = "config.json", "model.safetensors", "gair-bundle"


def read_meta(folder: str | os.PathLike, fmt: str, what: str, hint: str) -> dict:
    """config.json of a bundle or ONNX export folder (format `fmt`, config, fingerprint); one clear error otherwise."""
    cfg_path = Path(folder) / BUNDLE_CONFIG
    try:
        os.stat(cfg_path)  # a folder another user has not shared looks empty to is_file(): say what it is
    except PermissionError as exc:
        raise permission_error(folder, "model folder") from exc
    except OSError:
        pass
    if not cfg_path.is_file():
        raise GAIRError(f"{folder} is not {what} (no {BUNDLE_CONFIG}); {hint}")
    try:
        meta = json.loads(cfg_path.read_bytes())
    except PermissionError as exc:
        raise permission_error(cfg_path, "model file") from exc
    except (ValueError, OSError) as exc:
        raise GAIRError(f"{cfg_path} is not valid JSON ({one_line(exc)}); {hint}") from exc
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != fmt:
        raise GAIRError(f"{cfg_path} has format {found!r}, not {fmt!r}: this folder is not {what}; {hint}")
    if not isinstance(meta.get("config"), dict) or not isinstance(meta.get("fingerprint"), str):
        raise GAIRError(f"{cfg_path} lacks its config or fingerprint; {hint}")
    try:
        GAIRConfig.from_dict(meta["config"])
    except (GAIRError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise GAIRError(f"{cfg_path} holds an invalid model config ({one_line(exc, 160)}); {hint}") from exc
    return meta


def read_bundle_meta(path: str | os.PathLike) -> dict:
    """config.json of a bundle folder (format, fingerprint, source, config)."""
    return read_meta(path, BUNDLE_FORMAT, "a GAIR bundle", "convert a checkpoint with `python -m engine convert`")


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
    onnx = model.backend.startswith("onnx")
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
        "backend": model.backend,
        "device": str(model.device),
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
    """Official checkpoint .pth, bundle folder or ONNX export folder -> a GAIRModelLike (engine.runtime.protocol).

    backend: "torch", "onnx" (numpy in/out, no torch import), "onnx-int8" (the export's int8 encoders, CPU) or
    "auto" (ONNX files -> onnx; else torch when installed, else onnx). nili_convention overrides the stored one
    ("released" or "legacy", see engine.runtime.grid).
    """
    p = resolve_model_path(path)
    try:
        p.stat()
    except PermissionError as exc:
        raise permission_error(p, "model") from exc
    except OSError:
        raise GAIRError(f"model path {p} does not exist; give a GAIR checkpoint.pth, a bundle folder or an ONNX "
                        "export") from None
    if backend not in ("auto", "torch", "onnx", "onnx-int8"):
        raise GAIRError(f"backend must be auto, torch, onnx or onnx-int8, got {backend!r}")
    if backend == "auto":
        has_onnx = p.suffix == ".onnx" or (p.is_dir() and any(p.glob("*.onnx")))
        backend = "onnx" if has_onnx and not (p / BUNDLE_WEIGHTS).is_file() else _default_backend()
    if backend in ("onnx", "onnx-int8"):
        from .onnx_model import OnnxGAIR

        model = OnnxGAIR.load(p, device=device, int8=backend == "onnx-int8")
    else:
        torch_loader = importlib.import_module(TORCH_LOADER, __package__)
        model = torch_loader.load_torch_model(p, device, dtype, allow_unknown_keys)
    if nili_convention is not None:
        model.config = replace(model.config, nili_convention=nili_convention)
    return model


def _default_backend() -> str:
    return "torch" if importlib.util.find_spec("torch") is not None else "onnx"
