"""Plugin settings (model path, backend, device) persisted in the QGIS profile, and a cached model loader.

Loading a model takes seconds, so every algorithm and the map tool share one cached instance per
(path, backend, device, file modification time).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from qgis.core import QgsSettings

from .engine_link import engine_attrs

BACKENDS, DEVICES = engine_attrs("params", "BACKENDS", "DEVICES")
_PREFIX = "gair/"


@dataclass(frozen=True)
class GAIRSettings:
    model_path: str = ""  # official checkpoint (.pth), bundle folder, or ONNX model; "" -> engine default
    backend: str = "auto"
    device: str = "auto"

    @classmethod
    def load(cls) -> "GAIRSettings":
        s = QgsSettings()
        backend = s.value(_PREFIX + "backend", "auto", type=str)
        device = s.value(_PREFIX + "device", "auto", type=str)
        return cls(
            model_path=s.value(_PREFIX + "model_path", "", type=str),
            backend=backend if backend in BACKENDS else "auto",
            device=device if device in DEVICES else "auto",
        )

    def save(self) -> None:
        s = QgsSettings()
        s.setValue(_PREFIX + "model_path", self.model_path)
        s.setValue(_PREFIX + "backend", self.backend)
        s.setValue(_PREFIX + "device", self.device)


def normalise_model_path(path: str | None) -> str | None:
    """A bundle may be picked through its config.json; the engine wants the folder."""
    if not path:
        return None
    path = os.path.expanduser(str(path).strip())
    if os.path.basename(path) == "config.json":
        path = os.path.dirname(path)
    return path


_cache: dict[tuple, object] = {}
_lock = threading.Lock()


def _stamp(path: str | None) -> float:
    if not path or not os.path.exists(path):
        return 0.0
    if os.path.isdir(path):
        return max((os.path.getmtime(os.path.join(path, f)) for f in os.listdir(path)), default=0.0)
    return os.path.getmtime(path)


def load_model(path: str | None = None, backend: str | None = None, device: str | None = None):
    """The engine model for `path` (or the configured one), loaded once and shared; thread-safe."""
    from .engine_link import engine

    from .deps import runtime_problem

    settings = GAIRSettings.load()
    path = normalise_model_path(path) or normalise_model_path(settings.model_path)
    backend = backend or settings.backend
    device = device or settings.device
    problem = runtime_problem(backend)
    if problem:
        raise engine.GAIRError(problem)
    key = (path, backend, device, _stamp(path))
    with _lock:
        model = _cache.get(key)
        if model is None:
            try:
                model = engine.load_model(path=path, device=device, backend=backend)
            except engine.GAIRError as exc:
                if path is None and not os.environ.get("GAIR_CHECKPOINT"):
                    raise engine.GAIRError(
                        "No GAIR model is set: choose the official checkpoint.pth, a bundle or an ONNX export in "
                        f"Plugins > GAIR > GAIR settings, or in the algorithm's Model parameter ({exc})"
                    ) from exc
                raise
            _cache.clear()  # keep one model in memory: they are large
            _cache[key] = model
    return model


def model_problem(path: str | None) -> str | None:
    """Up-front check of a model choice (no loading): runtime installed, path exists."""
    from .deps import runtime_problem

    settings = GAIRSettings.load()
    problem = runtime_problem(settings.backend)
    if problem:
        return problem
    path = normalise_model_path(path) or normalise_model_path(settings.model_path)
    if path and not os.path.exists(path):
        return f"The GAIR model {path} does not exist; choose another in the Model parameter or in GAIR settings."
    return None


def clear_model_cache() -> None:
    with _lock:
        _cache.clear()
