"""Running one protocol job: operation id + JSON parameters -> the engine function, with progress, log and cancel.

A worker keeps one `JobRunner` for its life, so a model is loaded once and reused by every job that names it
(keyed by path, file time, backend and device), not once per click.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import math
import os
import threading
from collections.abc import Callable
from typing import Any

from ..errors import Cancelled, GAIRError
from ..io.guard import check_paths
from ..params import OPERATIONS, Operation
from . import protocol

Emit = Callable[[dict[str, Any]], None]

MODEL_KEYS = ("model", "backend", "device")  # pick the model; the engine function gets the loaded model
# Operations of the worker itself (not engine functions): what the plugin asks about the engine and its model
ENGINE_OPS = ("describe_engine", "describe_model", "official_checkpoint", "fetch_official_checkpoint")


def describe_engine() -> dict[str, Any]:
    """Versions and the device a job would use: what the plugin's settings show."""
    import platform
    import sys

    from .. import __version__

    info: dict[str, Any] = {"engine": __version__, "python": sys.version.split()[0], "executable": sys.executable,
                            "platform": platform.platform(), "protocol": protocol.PROTOCOL_VERSION}
    try:
        import torch

        info["torch"] = torch.__version__
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except ImportError:
        info["torch"], info["device"] = None, "cpu"
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    return info


def to_json(value: Any) -> Any:
    """Engine results (dataclasses, paths, numpy values) as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if callable(getattr(value, "summary", None)):  # the one line the plugin shows (LayerResult, ...)
            fields["summary"] = value.summary()
        return fields
    if hasattr(value, "fingerprint") and hasattr(value, "config"):  # a model (convert_checkpoint): what it is
        from ..runtime.loading import describe_model

        report = getattr(value, "load_report", None)
        return {**to_json(describe_model(value)), "load_report": report.summary() if report is not None else None}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return to_json(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


class _JobLog(logging.Handler):
    """Engine log records of the running job -> protocol `log` messages."""

    def __init__(self, job: str, emit: Emit) -> None:
        super().__init__(logging.INFO)
        self.job, self.emit_message = job, emit

    def emit(self, record: logging.LogRecord) -> None:
        level = "error" if record.levelno >= logging.ERROR else "warning" if record.levelno >= logging.WARNING \
            else "info"
        self.emit_message(protocol.log(self.job, level, record.getMessage()))


class JobRunner:
    """Runs jobs one at a time; `cancel(job)` is safe from another thread."""

    def __init__(self) -> None:
        self._models: dict[tuple, Any] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()

    def cancel(self, job: str) -> None:
        with self._lock:
            self._cancelled.add(job)

    def _is_cancelled(self, job: str) -> bool:
        with self._lock:
            return job in self._cancelled

    def _engine_op(self, op_id: str, params: dict[str, Any]) -> Any:
        from ..runtime import loading

        unknown = sorted(set(params) - set(MODEL_KEYS))
        if unknown:
            raise GAIRError(f"{op_id} has no parameter {', '.join(unknown)}; it takes {', '.join(MODEL_KEYS)}")
        if op_id == "describe_engine":
            return describe_engine()
        if op_id == "describe_model":  # loads (and keeps warm) the model these settings name
            return loading.describe_model(self.model(params.get("model") or None, params.get("backend") or "auto",
                                                     params.get("device") or "auto"))
        if op_id == "official_checkpoint":  # cached copy or size, without downloading
            info = loading.official_checkpoint_info()
            return {"cached": info.cached, "size": info.size, "describe": info.describe()}
        return {"path": loading.fetch_official_checkpoint(allow_download=True)}  # after the user's consent

    def model(self, path: str | None, backend: str = "auto", device: str = "auto"):
        """The loaded model for these settings; loads it on first use and keeps only the latest one. No path: the
        GAIR_CHECKPOINT file, else the official checkpoint's cached copy (downloading it is its own job, asked for
        with the user's consent: fetch_official_checkpoint)."""
        from ..runtime.loading import fetch_official_checkpoint, load_model

        if not path:
            path = os.environ.get("GAIR_CHECKPOINT") or str(fetch_official_checkpoint(allow_download=False))
        stamp = os.stat(path).st_mtime_ns if path and os.path.exists(path) and os.path.isfile(path) else 0
        key = (path, stamp, backend, device)
        if key not in self._models:
            self._models.clear()  # models are large: keep one
            self._models[key] = load_model(path, device=device, backend=backend)
        return self._models[key]

    def run(self, job: str, op: str, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Run one job to its end, emitting progress and log; returns its one `result` or `error` message."""
        handler = _JobLog(job, emit)
        engine_log = logging.getLogger("engine")
        engine_log.addHandler(handler)
        try:
            return protocol.result(job, to_json(self._call(job, op, dict(params), emit)))
        except Cancelled:
            return protocol.error(job, "cancelled", "cancelled; no output was written")
        except GAIRError as exc:
            return protocol.error(job, "user", str(exc))
        except MemoryError:
            return protocol.error(job, "internal", f"{op} ran out of memory; try a smaller extent or fewer dims")
        except Exception as exc:  # noqa: BLE001 - the client gets one line; the traceback goes to the worker's log
            logging.getLogger(__name__).exception("job %s (%s) failed", job, op)
            return protocol.error(job, "internal", f"{op} failed: {type(exc).__name__}: {exc}")
        finally:
            engine_log.removeHandler(handler)
            with self._lock:
                self._cancelled.discard(job)

    def _call(self, job: str, op_id: str, params: dict[str, Any], emit: Emit) -> Any:
        if op_id in ENGINE_OPS:
            return self._engine_op(op_id, params)
        op = operation_of(op_id)
        kwargs = checked_params(op, params)
        if any(p.name == "model" for p in op.params):
            settings = {k: kwargs.pop(k, None) for k in MODEL_KEYS}
            kwargs["model"] = self.model(settings["model"] or None, settings["backend"] or "auto",
                                         settings["device"] or "auto")

        def report(fraction: float, message: str = "") -> None:
            emit(protocol.progress(job, fraction, message))

        module, name = op.function.split(":")
        function = getattr(importlib.import_module(f"{__package__.rpartition('.')[0]}.{module}"), name)
        callbacks = {"progress": report, "cancel": lambda: self._is_cancelled(job)}
        accepted = inspect.signature(function).parameters  # convert_checkpoint takes neither
        return function(**kwargs, **{name: f for name, f in callbacks.items() if name in accepted})


def operation_of(op_id: str) -> Operation:
    """The engine operation named `op_id`; a GAIRError (one line, listing the known ones) otherwise."""
    if op_id not in OPERATIONS:
        raise GAIRError(f"unknown operation {op_id!r}; the engine knows {', '.join(sorted(OPERATIONS))}")
    return OPERATIONS[op_id]


def checked_params(op: Operation, params: dict[str, Any]) -> dict[str, Any]:
    """The request's parameters checked against the operation's definitions (names, choices, ranges)."""
    known = {p.name: p for p in op.params}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise GAIRError(f"{op.id} has no parameter {', '.join(unknown)}; it takes {', '.join(known)}")
    for name, value in params.items():
        param = known[name]
        if param.scalar and not isinstance(value, list):
            problem = param.check(value)
            if problem:
                raise GAIRError(f"{op.id}: {name} {problem}")
    missing = [p.name for p in op.params if p.positional and not p.optional and params.get(p.name) is None]
    if missing:
        raise GAIRError(f"{op.id} needs {', '.join(missing)}")
    check_paths(op, params)  # outputs that would destroy an input or cannot be written: refused before the model loads
    return dict(params)
