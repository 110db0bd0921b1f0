"""A client of `python -m engine serve`, standard library only (so the QGIS plugin can use it as it is).

`run()` uploads the local files named in the parameters, runs the job, streams its messages to a callback, and
downloads every file the job wrote into a local folder; results come back with local paths.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import protocol


class RemoteError(RuntimeError):
    """The server refused a request (the message is the server's)."""


class RemoteEngine:
    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"):
        request = urllib.request.Request(f"{self.url}{path}", data=body, method=method,
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  "Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                detail = json.loads(detail)["error"]
            except (ValueError, KeyError, TypeError):
                pass
            raise RemoteError(f"{method} {path}: HTTP {exc.code}: {detail}") from None

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        data = self._request(method, path, json.dumps(body).encode() if body is not None else None)
        return json.loads(data) if data else None

    def hello(self) -> dict[str, Any]:
        return self._json("GET", "/v1/hello")

    def run(self, op: str, params: dict[str, Any], inputs: dict[str, str | os.PathLike], out_dir: str | os.PathLike,
            on_message: Callable[[dict[str, Any]], None] | None = None,
            cancel: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Run `op` remotely. `inputs`: upload name -> local file; in `params`, {"file": name} names a file of the
        job (an upload, or an output to write). Returns the final protocol message, paths made local."""
        job = self._json("POST", "/v1/jobs")["job"]
        try:
            for name, local in inputs.items():
                self._request("PUT", f"/v1/jobs/{job}/files/{name}", Path(local).read_bytes(),
                              "application/octet-stream")
            self._json("POST", f"/v1/jobs/{job}/run", {"op": op, "params": params})
            final, seen, asked_cancel = None, 0, False
            while final is None:
                if cancel is not None and cancel() and not asked_cancel:
                    self._json("POST", f"/v1/jobs/{job}/cancel")
                    asked_cancel = True
                lines = self._request("GET", f"/v1/jobs/{job}/events?since={seen}").splitlines()
                for line in lines:
                    message = protocol.decode(line, protocol.ENGINE_TYPES)
                    seen += 1
                    if message["type"] in ("result", "error"):
                        final = message
                    elif on_message is not None:
                        on_message(message)
            if final["type"] == "result":
                final["result"] = self._download(job, final["result"], set(inputs), Path(out_dir))
            return final
        finally:
            self._request("DELETE", f"/v1/jobs/{job}")

    def _download(self, job: str, result: Any, uploads: set[str], out_dir: Path) -> Any:
        """Fetch every file the job wrote (outputs and their sidecars); {"file": NAME} -> local path."""
        out_dir.mkdir(parents=True, exist_ok=True)
        for entry in self._json("GET", f"/v1/jobs/{job}/files"):
            if entry["name"] not in uploads:
                target = out_dir / entry["name"]
                tmp = target.with_name(f".{target.name}.part")
                tmp.write_bytes(self._request("GET", f"/v1/jobs/{job}/files/{entry['name']}"))
                tmp.replace(target)

        def local(value: Any) -> Any:
            if isinstance(value, dict):
                return str(out_dir / value["file"]) if set(value) == {"file"} else {k: local(v) for k, v in
                                                                                    value.items()}
            return [local(v) for v in value] if isinstance(value, list) else value

        return local(result)
