"""Jobs on a remote engine (`python -m engine serve` on a GPU machine), as if they ran here.

The two machines share no disk: the input files a job names (by its parameters' kinds in engine.params) are
uploaded with their sidecars, paths become {"file": NAME} inside the job's folder on the server, and the files the
job wrote come back and are moved, each atomically, to the paths the user asked for. The server runs its own model
(its --model), so the plugin's model settings stay here. Standard library only: this runs in QGIS's Python.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.error
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engine_link import engine_attrs, engine_module

OPERATIONS = engine_attrs("params", "OPERATIONS")
EngineFailure = engine_module("service.local").EngineFailure
INPUT_KINDS = ("raster", "vector", "file")
OUTPUT_KINDS = ("raster_out", "vector_out", "file_out")
FOLDER_KINDS = ("folder", "folder_out")
MODEL_KEYS = ("model", "backend", "device")
SHAPEFILE_PARTS = (".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx")
_GPKG_JOURNALS = ("-wal", "-shm", "-journal")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def companions(path: str, kind: str) -> list[str]:
    """The files that travel with `path` (itself first), by name alone: a raster's sidecars (GDAL's .aux.xml, the PCA
    sidecar, the quicklook), a GeoPackage's journals, a shapefile's parts. Same length for any two paths. Written
    here, not imported: QGIS's Python reaches only the engine's standard-library contract."""
    if kind in ("raster", "raster_out"):  # engine.io.files.output_files (a test keeps the two equal)
        stem = os.path.join(os.path.dirname(path), os.path.splitext(os.path.basename(path))[0])
        return [path, *(path + s for s in (".aux.xml", *_GPKG_JOURNALS)), stem + ".pca.npz",
                stem + ".quicklook.png", stem + ".quicklook.png.aux.xml"]
    if kind in ("vector", "vector_out"):
        if path.lower().endswith(".shp"):
            return [path, *(path[:-4] + part for part in SHAPEFILE_PARTS)]
        return [path, *(path + journal for journal in _GPKG_JOURNALS)]
    return [path]


@dataclass
class RemoteRequest:
    """A job's parameters as the server takes them, what to upload, and where each returned file goes."""

    params: dict[str, Any] = field(default_factory=dict)
    uploads: dict[str, str] = field(default_factory=dict)  # server name -> local file
    targets: dict[str, str] = field(default_factory=dict)  # server name -> local path of an output file
    names: set[str] = field(default_factory=set)  # every server name in use, companions included
    outputs: set[str] = field(default_factory=set)  # server names of the outputs' own files

    def add(self, kind: str, local: str) -> dict[str, str]:
        """One path value -> {"file": NAME}, NAME a plain unused name (the file's own where it can be); its
        companions are mapped too (uploaded, for inputs that exist; brought back, for outputs)."""
        local = os.path.abspath(os.path.expanduser(local))
        base = _UNSAFE.sub("_", os.path.basename(local))[-120:].lstrip("._-") or "file"
        remote, n = base, 1
        while any(name in self.names for name in companions(remote, kind)):
            n += 1
            remote = f"{n}-{base}"
        for here, there in zip(companions(local, kind), companions(remote, kind)):
            self.names.add(there)
            if kind in INPUT_KINDS:
                if os.path.isfile(here):
                    self.uploads[there] = here
            else:
                self.targets[there] = here
        if kind in OUTPUT_KINDS:
            self.outputs.add(remote)
        return {"file": remote}

    @classmethod
    def build(cls, op: str, params: dict[str, Any]) -> RemoteRequest:
        if op not in OPERATIONS:
            raise EngineFailure("user", f"unknown operation {op!r}")
        kinds = {p.name: p.kind for p in OPERATIONS[op].params}
        request = cls()
        for name, value in params.items():
            kind = kinds.get(name)
            if name in MODEL_KEYS or kind == "model":
                continue  # the server's own model and device
            if kind in FOLDER_KINDS and value:
                raise EngineFailure("user", f"{op} {'reads' if kind == 'folder' else 'writes'} the folder {value}, "
                                            "which a remote engine cannot exchange; clear the engine URL in GAIR "
                                            "settings to run it on this computer")
            if kind in INPUT_KINDS + OUTPUT_KINDS and value not in (None, ""):
                values = [request.add(kind, os.fspath(v)) for v in (value if isinstance(value, list) else [value])]
                request.params[name] = values if isinstance(value, list) else values[0]
            else:
                request.params[name] = value
        return request

    def place_outputs(self, downloaded: Path, result: Any, log: Callable[[str, str], None]) -> Any:
        """Move every downloaded file to its local path (copy beside it, then an atomic rename); companions an older
        output left behind that this job did not write are removed. Returns the result with local paths."""
        first_output = next(iter(self.targets.values()), None)
        placed: dict[str, str] = {}
        for name in sorted(os.listdir(downloaded)):
            source = downloaded / name
            target = self.targets.get(name)
            if target is None:
                folder = os.path.dirname(first_output) if first_output else tempfile.gettempdir()
                target = os.path.join(folder, name)
                log("warning", f"the remote engine also wrote {name}; saved as {target}")
            _move_atomically(source, target)
            placed[str(source)] = target
        for name, target in self.targets.items():
            if str(downloaded / name) not in placed and name not in self.outputs and os.path.isfile(target):
                os.remove(target)  # a stale companion would describe the previous file

        def local(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: local(v) for k, v in value.items()}
            if isinstance(value, list):
                return [local(v) for v in value]
            return placed.get(value, value) if isinstance(value, str) else value

        return local(result)


def _move_atomically(source: Path, target: str) -> None:
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    partial = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.{uuid.uuid4().hex[:8]}.part")
    try:
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    except OSError as exc:
        raise EngineFailure("user", f"cannot write {target} ({exc.strerror or exc}); choose another output "
                                    "folder") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def run_remote_job(remote: tuple[str, str], op: str, params: dict[str, Any],
                   on_message: Callable[[dict[str, Any]], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Run one engine operation on the remote engine (url, token); its result with local paths. Raises EngineFailure
    with a line for the user (kind user, cancelled, internal, or start when the server cannot be reached)."""
    url, token = remote
    client = engine_module("service.client")
    engine = client.RemoteEngine(url, token)

    def log(level: str, message: str) -> None:
        if on_message is not None:
            on_message({"type": "log", "level": level, "message": message})

    try:
        if op == "describe_engine":
            hello = engine.hello()
            return {**{k: v for k, v in hello.items() if k != "type"}, "url": url}
        if op == "describe_model":
            return {"remote": url, "description": f"the remote engine's own model (its --model option, at {url})"}
        if op == "official_checkpoint":  # the server's model is the server's business: nothing to download here
            return {"cached": True, "size": None, "describe": "the remote engine's model"}
        if op == "fetch_official_checkpoint":
            return {"path": None}
        request = RemoteRequest.build(op, params)
        if any(k in params and params[k] not in (None, "", "auto") for k in MODEL_KEYS):
            log("info", f"the remote engine at {url} uses its own model and device")
        with tempfile.TemporaryDirectory(prefix="gair-remote-") as tmp:
            final = engine.run(op, request.params, request.uploads, tmp, on_message=on_message, cancel=cancel)
            if final["type"] == "error":
                raise EngineFailure(final["kind"], final["message"])
            return request.place_outputs(Path(tmp), final["result"], log)
    except client.RemoteError as exc:
        if "HTTP 401" in str(exc):
            raise EngineFailure("user", f"the remote engine at {url} refused the token: copy the token "
                                        "`python -m engine serve` uses into GAIR settings (Engine token)") from None
        raise EngineFailure("user", f"the remote engine at {url} refused the job: {exc}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EngineFailure("start", f"cannot reach the remote engine at {url} ({reason}); check the engine URL in "
                                     "GAIR settings and that `python -m engine serve` runs there") from None
