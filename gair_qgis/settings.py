"""Plugin settings (model path, backend, device) persisted in the QGIS profile, and a cached model loader.

Loading a model takes seconds, so every algorithm and the map tool share one cached instance per
(path, backend, device, file modification time). With no model set, the official checkpoint comes from the hub
cache; downloading it needs consent: the user's answer to a question with its size (desktop, asked on the GUI thread
before a job starts), or the "download without asking" setting (the only way headless, e.g. qgis_process).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from qgis.core import QgsSettings

from .engine_link import engine_attrs

BACKENDS, DEVICES = engine_attrs("params", "BACKENDS", "DEVICES")
_PREFIX = "gair/"
_ALLOW_DOWNLOAD = _PREFIX + "allow_download"


@dataclass(frozen=True)
class GAIRSettings:
    model_path: str = ""  # official checkpoint (.pth), bundle folder, or ONNX model; "" -> engine default
    backend: str = "auto"
    device: str = "auto"

    @classmethod
    def load(cls) -> GAIRSettings:
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
_download_consent = threading.Event()  # the user said yes to the download in this session


def download_allowed_setting() -> bool:
    """The "download the official checkpoint without asking" setting (off unless the user turned it on)."""
    return QgsSettings().value(_ALLOW_DOWNLOAD, False, type=bool)


def set_download_allowed(allowed: bool) -> None:
    QgsSettings().setValue(_ALLOW_DOWNLOAD, bool(allowed))


def download_allowed() -> bool:
    return download_allowed_setting() or _download_consent.is_set()


def _uses_official_checkpoint(path: str | None) -> bool:
    return not path and not os.environ.get("GAIR_CHECKPOINT")


def _can_ask() -> bool:
    """A person can answer: the QGIS desktop, on its GUI thread (never qgis_process, tests or worker threads)."""
    from qgis.core import QgsApplication
    from qgis.PyQt.QtCore import QThread

    app = QgsApplication.instance()
    return (app is not None and QgsApplication.platform() == "desktop"
            and QThread.currentThread() == app.thread())


def ask_download(info) -> bool:
    """Ask whether to download the official checkpoint now, naming its size; True when the user agrees."""
    from qgis.PyQt.QtWidgets import QApplication, QMessageBox

    answer = QMessageBox.question(
        QApplication.activeWindow(), "GAIR model",
        f"No GAIR model is set. Download the official checkpoint, {info.describe()}, into the Hugging Face cache "
        "now? It is downloaded once and reused.\n\nNo: choose a model in Plugins > GAIR > GAIR settings instead.",
        QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
    return answer == QMessageBox.Yes


def official_checkpoint_problem() -> str | None:
    """None when the official checkpoint can be used (cached, or downloading is allowed or agreed to now);
    otherwise the one line to show. Asks the user on the desktop; never downloads by itself."""
    from .engine_link import engine, engine_module

    try:
        info = engine_module("runtime.loading").official_checkpoint_info()
    except engine.GAIRError as exc:  # offline: fails at once, with what to do
        return str(exc)[:1].upper() + str(exc)[1:]
    if info.cached is not None or download_allowed():
        return None
    if _can_ask() and ask_download(info):
        _download_consent.set()
        return None
    return (f"No GAIR model is set and the official checkpoint ({info.describe()}) is not downloaded: choose a "
            "model in Plugins > GAIR > GAIR settings (or the algorithm's Model parameter), tick 'Download the "
            "official checkpoint without asking' there, or run `python -m engine fetch`.")


def _stamp(path: str | None) -> float:
    if not path or not os.path.exists(path):
        return 0.0
    if os.path.isdir(path):
        return max((os.path.getmtime(os.path.join(path, f)) for f in os.listdir(path)), default=0.0)
    return os.path.getmtime(path)


def load_model(path: str | None = None, backend: str | None = None, device: str | None = None):
    """The engine model for `path` (or the configured one), loaded once and shared; thread-safe."""
    from .deps import runtime_problem
    from .engine_link import engine, engine_module

    settings = GAIRSettings.load()
    path = normalise_model_path(path) or normalise_model_path(settings.model_path)
    backend = backend or settings.backend
    device = device or settings.device
    problem = runtime_problem(backend)
    if problem:
        raise engine.GAIRError(problem)
    if _uses_official_checkpoint(path):  # the hub cache's copy; downloaded only with consent (see above)
        path = str(engine_module("runtime.loading").fetch_official_checkpoint(allow_download=download_allowed()))
    key = (path, backend, device, _stamp(path))
    with _lock:
        model = _cache.get(key)
        if model is None:
            model = engine.load_model(path=path, device=device, backend=backend)
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
    if _uses_official_checkpoint(path):
        return official_checkpoint_problem()
    return None


def loaded_model():
    """The model the current settings name, when it is already loaded (no loading here), else None."""
    settings = GAIRSettings.load()
    path = normalise_model_path(settings.model_path)
    with _lock:
        for (cached_path, backend, device, _), model in _cache.items():
            same_file = cached_path == path or _uses_official_checkpoint(path)  # the hub's copy when none is set
            if (backend, device) == (settings.backend, settings.device) and same_file:
                return model
    return None


def clear_model_cache() -> None:
    with _lock:
        _cache.clear()
