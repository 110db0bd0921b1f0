"""Plugin settings (model path, backend, device) persisted in the QGIS profile, and the model a job names.

Models load in the engine process (kept warm there between jobs), never in QGIS. With no model set, the official
checkpoint comes from the hub cache; downloading it needs consent: the user's answer to a question with its size
(desktop, asked on the GUI thread before a job starts), or the "download without asking" setting (the only way
headless, e.g. qgis_process). The download itself is an engine job too.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
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


def ask_download(describe: str) -> bool:
    """Ask whether to download the official checkpoint now, naming its size; True when the user agrees."""
    from qgis.PyQt.QtWidgets import QApplication, QMessageBox

    answer = QMessageBox.question(
        QApplication.activeWindow(), "GAIR model",
        f"No GAIR model is set. Download the official checkpoint, {describe}, into the Hugging Face cache "
        "now? It is downloaded once and reused.\n\nNo: choose a model in Plugins > GAIR > GAIR settings instead.",
        QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
    return answer == QMessageBox.Yes


def model_params(path: str | None = None) -> dict:
    """The engine's model parameters of a job: `path` (an algorithm's Model parameter) or the settings' model, and
    the settings' backend and device. No model: the engine uses GAIR_CHECKPOINT or the official checkpoint."""
    settings = GAIRSettings.load()
    return {"model": normalise_model_path(path) or normalise_model_path(settings.model_path),
            "backend": settings.backend, "device": settings.device}


def model_problem(path: str | None) -> str | None:
    """Up-front check of a model choice that needs no engine: the file or folder exists."""
    path = normalise_model_path(path) or normalise_model_path(GAIRSettings.load().model_path)
    if path and not os.path.exists(path):
        return f"The GAIR model {path} does not exist; choose another in the Model parameter or in GAIR settings."
    return None


def ensure_official_checkpoint(params: dict, run: Callable[[str, dict], dict]) -> None:
    """Before a job whose model is the official checkpoint: make sure the engine has it, asking to download it
    (its size named) on the desktop. `run(op, params)` runs an engine job. Raises GAIRError-like text via
    RuntimeError when the user must act first."""
    if not _uses_official_checkpoint(params.get("model")):
        return
    info = run("official_checkpoint", {})  # cached copy or the hub's size; offline: fails at once with the fix
    if info.get("cached"):
        return
    if not download_allowed():
        if _can_ask() and ask_download(info["describe"]):
            _download_consent.set()
        else:
            raise RuntimeError(
                f"No GAIR model is set and the official checkpoint ({info['describe']}) is not downloaded: choose a "
                "model in Plugins > GAIR > GAIR settings (or the algorithm's Model parameter), tick 'Download the "
                "official checkpoint without asking' there, or run `python -m engine fetch` in the engine's Python.")
    run("fetch_official_checkpoint", {})
