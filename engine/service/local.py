"""A client of a local engine worker process (`python -m engine worker`), standard library only.

The QGIS plugin runs every job through one of these, in QGIS's own Python: the engine (torch, onnxruntime, rasterio)
lives in another Python and another process, so a crash or an out-of-memory kill there becomes an error here, and
QGIS keeps running. The worker stays warm between jobs (a model loads once); a dead worker is replaced on the next
job.
"""
from __future__ import annotations

import collections
import itertools
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from . import protocol

OnMessage = Callable[[dict[str, Any]], None]
START_TIMEOUT_S = 180.0  # first start imports torch and friends; a cold disk can take a minute
CANCEL_GRACE_S = 20.0  # a cancelled job that does not stop by then has its worker killed
_EOF = object()


class EngineFailure(RuntimeError):
    """A job did not produce a result. `kind` is the protocol's error kind (user, cancelled, internal) or "died"
    (the worker process ended: killed, crashed, out of memory) or "start" (the engine could not be started)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class LocalEngine:
    """One engine worker process, started on first use and restarted after it dies. Jobs run one at a time."""

    def __init__(self, python: str, env: dict[str, str] | None = None, log_path: str | None = None) -> None:
        self.python, self.env, self.log_path = python, env, log_path
        self.hello: dict[str, Any] | None = None
        self._process: subprocess.Popen | None = None
        self._lines: queue.Queue = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    # --- the process ------------------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> dict[str, Any]:
        """Start the worker (if it is not running) and return its hello: versions and device."""
        if self.alive and self.hello is not None:
            return self.hello
        self.stop()
        if not self.python or not os.path.exists(self.python):
            raise EngineFailure("start", f"the engine Python {self.python or '(none)'} does not exist; set it up with "
                                         "GAIR > Set up engine…, or point GAIR_ENGINE_PYTHON at a Python that has "
                                         "the GAIR engine installed")
        self._lines, self._stderr = queue.Queue(), collections.deque(maxlen=40)
        flags = subprocess.CREATE_NO_WINDOW if sys.platform == "win32" else 0
        try:
            self._process = subprocess.Popen([self.python, "-m", "engine", "worker"], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._environment(),
                                             cwd=tempfile.gettempdir(),  # `-m` puts the cwd on sys.path
                                             creationflags=flags)
        except OSError as exc:
            raise EngineFailure("start", f"could not start the engine with {self.python}: {exc}") from None
        threading.Thread(target=self._read_stdout, args=(self._process, self._lines), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self._process,), daemon=True).start()
        message = self._next(time.monotonic() + START_TIMEOUT_S)
        if message is _EOF or message is None or message.get("type") != "hello":
            self.stop()
            what = "did not answer" if message is None else "stopped"
            raise EngineFailure("start", f"the engine ({self.python} -m engine worker) {what} at start: "
                                         f"{self._stderr_tail() or 'no message'}")
        self.hello = message
        return message

    def stop(self) -> None:
        """End the worker: a polite shutdown, then kill."""
        process, self._process, self.hello = self._process, None, None
        if process is None:
            return
        try:
            if process.poll() is None:
                process.stdin.write(protocol.encode({"type": "shutdown"}))
                process.stdin.flush()
                process.wait(timeout=5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ if self.env is None else self.env)
        for name in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP"):  # QGIS's own Python settings are not the engine's
            if self.env is None or name not in self.env:
                env.pop(name, None)
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("PYTHONIOENCODING", "utf-8")
        return env

    def _read_stdout(self, process: subprocess.Popen, lines: queue.Queue) -> None:
        for line in process.stdout:
            if line.strip():
                try:
                    lines.put(protocol.decode(line, protocol.ENGINE_TYPES))
                except protocol.ProtocolError as exc:
                    self._stderr.append(f"bad line from the engine: {exc}")
        lines.put(_EOF)

    def _read_stderr(self, process: subprocess.Popen) -> None:
        log = open(self.log_path, "a", encoding="utf-8") if self.log_path else None  # noqa: SIM115 - thread-owned
        try:
            for raw in process.stderr:
                text = raw.decode("utf-8", errors="replace").rstrip()
                self._stderr.append(text)
                if log is not None:
                    log.write(text + "\n")
                    log.flush()
        finally:
            if log is not None:
                log.close()

    def _stderr_tail(self, lines: int = 6) -> str:
        return " | ".join(list(self._stderr)[-lines:])

    def _next(self, deadline: float) -> Any:
        """The next message, _EOF when the worker ended, None at the deadline."""
        while True:
            try:
                return self._lines.get(timeout=max(0.0, min(0.1, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    return None

    # --- jobs ---------------------------------------------------------------------------------------------------
    def run(self, op: str, params: dict[str, Any], on_message: OnMessage | None = None,
            cancel: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Run one job; returns its result object. Progress and log messages go to `on_message` as they come.
        Raises EngineFailure for an error, a cancel, or a worker that died (the next job starts a new one)."""
        with self._lock:
            self.start()
            job = f"job-{os.getpid()}-{next(self._ids)}"
            try:
                self._process.stdin.write(protocol.encode({"type": "run", "job": job, "op": op, "params": params}))
                self._process.stdin.flush()
            except (OSError, ValueError):
                return self._died(op)
            cancelled_at = None
            while True:
                if cancelled_at is None and cancel is not None and cancel():
                    cancelled_at = time.monotonic()
                    self._send_cancel(job)
                if cancelled_at is not None and time.monotonic() - cancelled_at > CANCEL_GRACE_S:
                    self.stop()  # a job deaf to cancel: its worker goes, its partial files are temporary ones
                    raise EngineFailure("cancelled", "cancelled (the engine was stopped); no output was written")
                message = self._next(time.monotonic() + 0.1)
                if message is None:
                    continue
                if message is _EOF:
                    return self._died(op)
                if message.get("job") not in (job, None):
                    continue  # a late line of an earlier job
                if message["type"] == "result":
                    return message["result"]
                if message["type"] == "error" and message.get("job") == job:
                    raise EngineFailure(message["kind"], message["message"])
                if on_message is not None:
                    on_message(message)

    def _send_cancel(self, job: str) -> None:
        try:
            self._process.stdin.write(protocol.encode({"type": "cancel", "job": job}))
            self._process.stdin.flush()
        except (OSError, ValueError):
            pass  # it died: the reader reports it

    def _died(self, op: str):
        process = self._process
        code = process.wait() if process is not None else None
        time.sleep(0.05)  # let the stderr reader catch the last lines
        self._process, self.hello = None, None
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        tail = self._stderr_tail()
        raise EngineFailure("died", f"the engine process stopped during {op} ({how}"
                                    f"{', probably out of memory' if code in (-9, 137) else ''}); "
                                    f"no output was written; the next job starts a new engine"
                                    f"{'. Its last words: ' + tail if tail else ''}")
