"""`python -m engine serve`: the worker protocol over HTTP, for a GPU machine on the network.

Threat model (also in the README): the server runs jobs for whoever holds the token, as the user who started it.
It binds 127.0.0.1 unless told otherwise; on another interface anyone who can reach the port can try tokens, so put
it behind a VPN/SSH tunnel or a firewall, and use TLS (a reverse proxy) on untrusted networks: the token travels in a
header. A job sees only its own folder: inputs are uploaded into it, every path parameter (by its definition in
engine.params) must be {"file": NAME} with a plain NAME, and outputs are downloaded from it. The model is
the server's (`--model`), never a path sent by a client.

Endpoints (all need `Authorization: Bearer TOKEN`):
  GET  /v1/hello                      versions and device
  POST /v1/jobs                       -> {"job": ID}: a new, empty job folder
  PUT  /v1/jobs/ID/files/NAME         upload an input (raw body)
  POST /v1/jobs/ID/run                {"op": ..., "params": {...}}: start it (one job at a time)
  GET  /v1/jobs/ID/events?since=N     protocol messages from index N, as JSON lines (waits up to 20 s for news)
  POST /v1/jobs/ID/cancel
  GET  /v1/jobs/ID/files              [{"name", "size"}] of the folder; GET .../files/NAME downloads one
  DELETE /v1/jobs/ID                  remove the job and its folder
"""
from __future__ import annotations

import hmac
import json
import re
import secrets
import shutil
import tempfile
import threading
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from ..errors import GAIRError
from . import protocol
from .jobs import ENGINE_OPS, JobRunner, describe_engine, operation_of

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")  # one file name, no folders, not hidden
CHUNK = 1 << 20
POLL_SECONDS = 20.0


class Job:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.messages: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        self.thread: threading.Thread | None = None

    def add(self, message: dict[str, Any]) -> None:
        with self.changed:
            self.messages.append(message)
            self.changed.notify_all()


class Service:
    """Jobs, their folders and the one runner; the HTTP handler only translates requests to these calls."""

    def __init__(self, token: str, workdir: Path, model: str | None, max_upload: int) -> None:
        self.token, self.workdir, self.model, self.max_upload = token, workdir, model, max_upload
        self.runner = JobRunner()
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()

    def new_job(self) -> str:
        job_id = uuid.uuid4().hex
        folder = self.workdir / job_id
        folder.mkdir(mode=0o700)
        with self.lock:
            self.jobs[job_id] = Job(folder)
        return job_id

    def job(self, job_id: str) -> Job:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise LookupError(f"no job {job_id}")
        return job

    def file_path(self, job: Job, name: str) -> Path:
        if not NAME.match(name):
            raise ValueError(f"bad file name {name!r}: use a plain name (letters, digits, . _ -), no folders")
        return job.folder / name

    def sandboxed(self, job: Job, op_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Path parameters given as {"file": NAME} -> paths inside the job folder; any other form of a path refused.

        Which parameters are paths comes from the operation's definitions (engine.params), not from guessing."""
        from ..params import PATH_KINDS

        op = operation_of(op_id)
        kinds = {p.name: p.kind for p in op.params}
        out = {}
        for name, value in params.items():
            if kinds.get(name) == "model":
                raise ValueError("the server uses its own model and device: leave model/backend/device out")
            if kinds.get(name) in PATH_KINDS and value is not None:
                values = value if isinstance(value, list) else [value]
                if not all(isinstance(v, dict) and set(v) == {"file"} for v in values):
                    raise ValueError(f"{name} names a file: give it as {{\"file\": NAME}} and upload it")
                paths = [str(self.file_path(job, str(v["file"]))) for v in values]
                out[name] = paths if isinstance(value, list) else paths[0]
            else:
                out[name] = value
        return out

    def start(self, job_id: str, op: str, params: dict[str, Any]) -> None:
        job = self.job(job_id)
        if "backend" in params or "device" in params:
            raise ValueError("the server uses its own model and device: leave model/backend/device out")
        if op in ENGINE_OPS:  # about the server's engine and its own model only; it never downloads for a client
            if op not in ("describe_engine", "describe_model") or params:
                raise ValueError(f"a remote engine answers describe_engine and describe_model (no parameters), "
                                 f"not {op}")
            params = {"model": self.model} if op == "describe_model" else {}
        else:
            params = self.sandboxed(job, op, params)
        with self.lock:
            if any(j.thread is not None and j.thread.is_alive() for j in self.jobs.values()):
                raise RuntimeError("the engine is busy with another job; try again when it has finished")
            if job.thread is not None:
                raise RuntimeError(f"job {job_id} has already run; create a new job")
            if op not in ENGINE_OPS and any(p.name == "model" for p in operation_of(op).params):
                params["model"] = self.model
            job.thread = threading.Thread(target=self._run, args=(job_id, job, op, params), daemon=True)
            job.thread.start()

    def _run(self, job_id: str, job: Job, op: str, params: dict[str, Any]) -> None:
        final = self.runner.run(job_id, op, params, job.add)
        if final["type"] == "result":
            final["result"] = self._relative(job, final["result"])
        job.add(final)

    def _relative(self, job: Job, value: Any) -> Any:
        """Result paths inside the job folder -> {"file": NAME}, so the client knows what to download."""
        if isinstance(value, dict):
            return {k: self._relative(job, v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._relative(job, v) for v in value]
        if isinstance(value, str) and value.startswith(str(job.folder) + "/"):
            return {"file": value[len(str(job.folder)) + 1:]}
        return value

    def remove(self, job_id: str) -> None:
        job = self.job(job_id)
        self.runner.cancel(job_id)
        if job.thread is not None:
            job.thread.join()
        with self.lock:
            self.jobs.pop(job_id, None)
        shutil.rmtree(job.folder, ignore_errors=True)


class Handler(BaseHTTPRequestHandler):
    server_version = "gair-engine"
    service: Service  # set on the subclass made by make_server

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # requests are not logged: URLs carry job ids, and the console is the user's

    def _reply(self, status: int, body: Any = None, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else ""
        if hmac.compare_digest(given.encode(), self.service.token.encode()):
            return True
        self._reply(HTTPStatus.UNAUTHORIZED, {"error": "missing or wrong token (Authorization: Bearer TOKEN)"})
        return False

    def _json_body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > CHUNK:
            raise ValueError("request body too large")
        body = json.loads(self.rfile.read(length) or b"{}")
        if not isinstance(body, dict):
            raise ValueError("the request body must be a JSON object")
        return body

    def _route(self, method: str) -> None:
        if not self._authorised():
            return
        url = urlparse(self.path)
        parts = [p for p in url.path.split("/") if p]
        try:
            self._dispatch(method, parts, parse_qs(url.query))
        except LookupError as exc:
            self._reply(HTTPStatus.NOT_FOUND, {"error": str(exc)})
        except (ValueError, GAIRError) as exc:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except RuntimeError as exc:
            self._reply(HTTPStatus.CONFLICT, {"error": str(exc)})

    def _dispatch(self, method: str, parts: list[str], query: dict[str, list[str]]) -> None:
        service = self.service
        if method == "GET" and parts == ["v1", "hello"]:
            return self._reply(HTTPStatus.OK, {"type": "hello", **describe_engine()})
        if method == "POST" and parts == ["v1", "jobs"]:
            return self._reply(HTTPStatus.CREATED, {"job": service.new_job()})
        if len(parts) < 3 or parts[:2] != ["v1", "jobs"]:
            raise LookupError(f"no such endpoint {self.path}")
        job_id, rest = parts[2], parts[3:]
        job = service.job(job_id)
        if method == "DELETE" and not rest:
            service.remove(job_id)
            return self._reply(HTTPStatus.NO_CONTENT)
        if method == "POST" and rest == ["run"]:
            body = self._json_body()
            service.start(job_id, str(body.get("op")), dict(body.get("params") or {}))
            return self._reply(HTTPStatus.ACCEPTED, {"job": job_id})
        if method == "POST" and rest == ["cancel"]:
            service.runner.cancel(job_id)
            return self._reply(HTTPStatus.ACCEPTED, {"job": job_id})
        if method == "GET" and rest == ["events"]:
            since = int(query.get("since", ["0"])[0])
            with job.changed:
                job.changed.wait_for(lambda: len(job.messages) > since, timeout=POLL_SECONDS)
                news = job.messages[since:]
            return self._reply(HTTPStatus.OK, b"".join(protocol.encode(m) for m in news), "application/x-ndjson")
        if method == "GET" and rest == ["files"]:
            files = [{"name": p.name, "size": p.stat().st_size} for p in sorted(job.folder.iterdir()) if p.is_file()]
            return self._reply(HTTPStatus.OK, files)
        if len(rest) == 2 and rest[0] == "files":
            path = service.file_path(job, rest[1])
            if method == "PUT":
                return self._upload(path)
            if method == "GET":
                if not path.is_file():
                    raise LookupError(f"job {job_id} has no file {rest[1]}")
                return self._reply(HTTPStatus.OK, path.read_bytes(), "application/octet-stream")
        raise LookupError(f"no such endpoint {method} {self.path}")

    def _upload(self, path: Path) -> None:
        length = int(self.headers.get("Content-Length") or -1)
        if length < 0 or length > self.service.max_upload:
            raise ValueError(f"uploads need a Content-Length of at most {self.service.max_upload} bytes")
        tmp = path.with_name(f".{path.name}.part")
        with open(tmp, "wb") as handle:
            left = length
            while left:
                chunk = self.rfile.read(min(CHUNK, left))
                if not chunk:
                    tmp.unlink(missing_ok=True)
                    raise ValueError("the upload ended early")
                handle.write(chunk)
                left -= len(chunk)
        tmp.replace(path)
        self._reply(HTTPStatus.CREATED, {"name": path.name, "size": length})

    def do_GET(self) -> None:  # noqa: N802 - http.server's names
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._route("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._route("DELETE")


def make_server(host: str = "127.0.0.1", port: int = 8765, token: str | None = None, model: str | None = None,
                workdir: str | Path | None = None, max_upload: int = 64 * 2**30) -> tuple[ThreadingHTTPServer, str]:
    """The server (not yet serving) and its token; a token is made when none is given."""
    token = token or secrets.token_urlsafe(24)
    if len(token) < 16:
        raise GAIRError("the token is too short: use at least 16 characters (or leave it out to get a random one)")
    folder = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="gair-serve-"))
    folder.mkdir(parents=True, exist_ok=True)
    service = Service(token, folder, model, max_upload)
    handler = type("GAIRHandler", (Handler,), {"service": service})
    return ThreadingHTTPServer((host, port), handler), token
