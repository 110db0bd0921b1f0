"""The engine worker protocol: JSON objects, one per line, UTF-8 (see docs/WORKER_PROTOCOL.md).

The same messages travel over a local worker's stdin/stdout and over `python -m engine serve` (HTTP). Kept to the
standard library so a client (the QGIS plugin, in QGIS's own Python) can import this file alone.

Client -> engine:  {"type": "run", "job": ID, "op": OPERATION, "params": {...}}
                   {"type": "cancel", "job": ID}
                   {"type": "shutdown"}
Engine -> client:  {"type": "hello", "protocol": 1, ...versions and device}
                   {"type": "progress", "job": ID, "fraction": 0..1, "message": str}
                   {"type": "log", "job": ID, "level": "info|warning|error", "message": str}
                   {"type": "result", "job": ID, "result": {...}}
                   {"type": "error", "job": ID, "kind": "user|cancelled|internal", "message": one line}
"""
from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 1
CLIENT_TYPES = ("run", "cancel", "shutdown")
ENGINE_TYPES = ("hello", "progress", "log", "result", "error")
ERROR_KINDS = ("user", "cancelled", "internal")


class ProtocolError(ValueError):
    """A line that is not a valid message of this protocol."""


def encode(message: dict[str, Any]) -> bytes:
    """One message as one line (no newline inside: json escapes them)."""
    return (json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def decode(line: bytes | str, allowed: tuple[str, ...]) -> dict[str, Any]:
    """Parse one line; raises ProtocolError naming what is wrong."""
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not a JSON line: {exc}") from exc
    if not isinstance(message, dict) or message.get("type") not in allowed:
        raise ProtocolError(f"expected an object with 'type' in {allowed}, got {str(line)[:200]!r}")
    if message["type"] in ("run", "cancel") and not isinstance(message.get("job"), str):
        raise ProtocolError(f"a {message['type']!r} message needs a string 'job' id")
    if message["type"] == "run":
        if not isinstance(message.get("op"), str) or not isinstance(message.get("params", {}), dict):
            raise ProtocolError("a 'run' message needs 'op' (string) and 'params' (object)")
    return message


def progress(job: str, fraction: float, message: str = "") -> dict[str, Any]:
    return {"type": "progress", "job": job, "fraction": min(max(float(fraction), 0.0), 1.0), "message": message}


def log(job: str | None, level: str, message: str) -> dict[str, Any]:
    return {"type": "log", "job": job, "level": level, "message": message}


def result(job: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "result", "job": job, "result": value}


def error(job: str | None, kind: str, message: str) -> dict[str, Any]:
    assert kind in ERROR_KINDS
    return {"type": "error", "job": job, "kind": kind, "message": " ".join(str(message).split())}
