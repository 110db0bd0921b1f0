"""`python -m engine worker`: the engine in its own process, speaking the protocol on stdin/stdout.

The QGIS plugin starts one worker and keeps it warm between jobs. Jobs run one at a time on a thread while the
main thread keeps reading stdin, so a `cancel` arrives while the job works. stdout carries protocol lines only:
anything else the engine or a library prints goes to stderr, which the client may show as a log.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from typing import IO, Any

from . import protocol
from .jobs import JobRunner, describe_engine


class Worker:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.runner = JobRunner()
        self._write_lock = threading.Lock()
        self._job: threading.Thread | None = None
        self._busy = threading.Event()

    def emit(self, message: dict[str, Any]) -> None:
        data = protocol.encode(message)
        with self._write_lock:
            self.out.write(data)
            self.out.flush()

    def handle(self, message: dict[str, Any]) -> bool:
        """Act on one client message; False ends the worker."""
        kind = message["type"]
        if kind == "shutdown":
            return False
        if kind == "cancel":
            self.runner.cancel(message["job"])
            return True
        if self._busy.is_set():
            self.emit(protocol.error(message["job"], "user", "the engine is busy with another job; wait for it or "
                                                             "cancel it first"))
            return True
        self._busy.set()
        self._job = threading.Thread(target=self._run, name=f"job-{message['job']}", daemon=True, args=(message,))
        self._job.start()
        return True

    def _run(self, message: dict[str, Any]) -> None:
        final = self.runner.run(message["job"], message["op"], message.get("params", {}), self.emit)
        self._busy.clear()  # before the final line: a client may send the next job as soon as it reads it
        self.emit(final)

    def serve(self, lines: IO[bytes]) -> None:
        self.emit({"type": "hello", **describe_engine()})
        for line in lines:
            if not line.strip():
                continue
            try:
                message = protocol.decode(line, protocol.CLIENT_TYPES)
            except protocol.ProtocolError as exc:
                self.emit(protocol.error(None, "internal", f"bad message: {exc}"))
                continue
            if not self.handle(message):
                break
        # stdin closed or shutdown: stop the running job promptly so it leaves no partial output
        if self._job is not None and self._job.is_alive():
            self.runner.cancel(self._job.name.removeprefix("job-"))
            self._job.join()


def main() -> int:
    """Protocol on the real stdout; Python-level prints of the engine and libraries go to stderr."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    Worker(out).serve(sys.stdin.buffer)
    return 0
