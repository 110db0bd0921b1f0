"""Every GAIR job runs in the engine's own process: which Python that is, the warm worker, and one `run_job`.

QGIS's Python needs only the standard library here: the engine (torch, onnxruntime, rasterio, scikit-learn) lives
in another Python, found in this order: the GAIR_ENGINE_PYTHON environment variable (headless use, qgis_process,
tests), the path in GAIR settings, the environment "GAIR > Set up engine…" created in the QGIS profile. With an
engine URL in the settings, jobs go to `python -m engine serve` on another machine instead.
"""
from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from qgis.core import QgsApplication, QgsSettings

from .engine_link import checkout_root, engine_module

ENGINE_PYTHON_ENV = "GAIR_ENGINE_PYTHON"
PYTHON_KEY = "gair/engine_python"
URL_KEY, TOKEN_KEY = "gair/engine_url", "gair/engine_token"

Progress = Callable[[float, str], None]
Log = Callable[[str, str], None]  # (level: info|warning|error, message)

EngineFailure = engine_module("service.local").EngineFailure  # stdlib-only, like the whole worker client

_engine = None
_engine_lock = threading.Lock()


def profile_engine_dir() -> str:
    """Where "Set up engine…" puts the engine's environment: the QGIS profile, so it goes with the profile."""
    return os.path.join(QgsApplication.qgisSettingsDirPath(), "gair_engine")


def venv_python(venv: str) -> str:
    return os.path.join(venv, "Scripts", "python.exe") if sys.platform == "win32" else os.path.join(venv, "bin",
                                                                                                    "python")


def engine_python() -> tuple[str | None, str]:
    """(the engine's Python, where that choice comes from); (None, why) when there is none."""
    from_env = os.environ.get(ENGINE_PYTHON_ENV, "").strip()
    if from_env:
        return from_env, f"the {ENGINE_PYTHON_ENV} environment variable"
    from_settings = QgsSettings().value(PYTHON_KEY, "", type=str).strip()
    if from_settings:
        return from_settings, "GAIR settings"
    created = venv_python(os.path.join(profile_engine_dir(), "venv"))
    if os.path.isfile(created):
        return created, "the environment GAIR > Set up engine… created"
    return None, "no engine is set up"


def remote_engine_settings() -> tuple[str, str] | None:
    """(URL, token) of a remote engine when the settings name one."""
    settings = QgsSettings()
    url = settings.value(URL_KEY, "", type=str).strip()
    return (url, settings.value(TOKEN_KEY, "", type=str)) if url else None


def shared_engine():
    """The warm local worker for the current engine Python (a new one when the choice changed)."""
    global _engine
    python, why = engine_python()
    if python is None:
        raise EngineFailure("start", "no GAIR engine is set up: use Plugins > GAIR > Set up engine… (or set "
                                       f"{ENGINE_PYTHON_ENV} to a Python that has the GAIR engine installed)")
    with _engine_lock:
        if _engine is None or _engine.python != python:
            if _engine is not None:
                _engine.stop()
            log_path = os.path.join(profile_engine_dir(), "worker.log")
            os.makedirs(os.path.dirname(log_path), exist_ok=True)
            env = None
            root = checkout_root()
            if root is not None:  # a source checkout: the worker runs this checkout's engine, not an installed one
                env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONSTARTUP")}
                env["PYTHONPATH"] = root
            _engine = engine_module("service.local").LocalEngine(python, env=env, log_path=log_path)
        return _engine


def run_job(op: str, params: dict[str, Any], progress: Progress | None = None, log: Log | None = None,
            cancel: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Run one engine operation (engine.params ids and parameter names) in the engine process; its result object.
    Raises EngineFailure (kind: user, cancelled, internal, died, start) with a line to show the user."""

    def on_message(message: dict[str, Any]) -> None:
        if message["type"] == "progress" and progress is not None:
            progress(message["fraction"], message.get("message", ""))
        elif message["type"] == "log" and log is not None:
            log(message["level"], message["message"])

    remote = remote_engine_settings()
    if remote is not None:
        from .remote_jobs import run_remote_job

        return run_remote_job(remote, op, params, on_message, cancel)
    return shared_engine().run(op, params, on_message=on_message, cancel=cancel)


def stop_engine() -> None:
    """End the warm worker (plugin unload, or the engine Python changed)."""
    global _engine
    with _engine_lock:
        if _engine is not None:
            _engine.stop()
            _engine = None
