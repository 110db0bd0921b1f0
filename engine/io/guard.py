"""What an operation may write, checked before any work: nothing a user owns is ever lost.

From an operation's parameter kinds (engine.params), its inputs are the values of input kinds and its outputs those
of `*_out` kinds. `check_paths` refuses an output that is an input (compared as real files: through symlinks, and hard
links where both exist), that is another output of the same run, whose sidecars would replace an input, that is an
existing folder, or whose folder cannot be created or written. `guarded` runs that check when an engine function is
called (so the CLI, the worker and Python callers are all covered), then holds each output's `OutputLock` for the
run and removes the temp files a killed run of those outputs left behind.
"""
from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import GAIRError
from ..params import OPERATIONS, Operation, Param
from .files import OutputLock, output_files, remove_stale_temp_files

INPUT_KINDS = ("raster", "vector", "file", "folder", "model")
OUTPUT_KINDS = ("raster_out", "vector_out", "file_out", "folder_out")
_GPKG_JOURNALS = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class PathValue:
    """One path given to a parameter (a repeated parameter gives several)."""

    param: Param
    path: Path

    @property
    def name(self) -> str:
        """How the user named the parameter: the CLI option, and the toolbox label."""
        title = self.param.label or self.param.help.split(";")[0]
        return f"{self.param.option} ({title})" if title else self.param.option

    def written(self) -> list[Path]:
        """Every file writing this output may create or replace: the raster's sidecars, a GeoPackage's journals."""
        if self.param.kind in ("raster", "raster_out"):
            return output_files(self.path, existing_only=False)
        if self.param.kind in ("vector", "vector_out"):
            return [self.path, *(Path(str(self.path) + s) for s in _GPKG_JOURNALS)]
        return [self.path]

    def owned(self) -> list[Path]:
        """The files of this input as they exist now (main file and sidecars)."""
        return [p for p in self.written() if p == self.path or p.is_file()]


def path_values(op: Operation, values: dict) -> tuple[list[PathValue], list[PathValue]]:
    """(inputs, outputs) of a call: the path values of input-kind and output-kind parameters (loaded models and
    empty values skipped)."""
    inputs, outputs = [], []
    for param in op.params:
        if param.kind not in INPUT_KINDS and param.kind not in OUTPUT_KINDS:
            continue
        value = values.get(param.name)
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            if isinstance(item, str | os.PathLike) and os.fspath(item):
                (outputs if param.kind in OUTPUT_KINDS else inputs).append(PathValue(param, Path(os.fspath(item))))
    return inputs, outputs


def same_file(a: Path, b: Path) -> bool:
    """The same file on disk: equal real paths (symlinks resolved), or one file under two names (hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def check_paths(op: Operation | str, values: dict) -> list[PathValue]:
    """Refuse outputs that would destroy an input or another output, or that cannot be written; returns the outputs.

    Runs before any work, so a bad output fails in a second and leaves nothing behind.
    """
    op = OPERATIONS[op] if isinstance(op, str) else op
    inputs, outputs = path_values(op, values)
    for inp in inputs:  # plain files (a manifest, a classifier, a checkpoint): missing -> say so before any work
        if inp.param.kind == "file" and not inp.path.exists():
            raise GAIRError(f"{inp.name} {inp.path} does not exist; check the path")
    for out in outputs:
        for inp in inputs:
            if same_file(out.path, inp.path):
                raise GAIRError(f"{out.name} {out.path} is also the input {inp.name}: writing it would overwrite "
                                "that input; choose another output name")
            hit = next(((w, o) for w in out.written() for o in inp.owned() if same_file(w, o)), None)
            if hit is not None:
                raise GAIRError(f"{out.name} {out.path} would overwrite {hit[1]}, which belongs to the input "
                                f"{inp.name}; choose another output name")
    for i, out in enumerate(outputs):
        for other in outputs[:i]:
            if same_file(out.path, other.path):
                raise GAIRError(f"the outputs {other.name} and {out.name} are the same file ({out.path}); give "
                                "each output its own name")
    for out in outputs:
        check_writable(out)
    return outputs


def check_writable(out: PathValue) -> None:
    """The output is not an existing folder (or, for a folder output, a file) and its folder can be made and written."""
    path, folder_out = out.path, out.param.kind == "folder_out"
    if not folder_out and path.is_dir():
        raise GAIRError(f"{out.name} {path} is an existing folder; give a file name inside it, e.g. "
                        f"{path / ('result' + (path.suffix or _default_suffix(out.param)))}")
    if folder_out and path.exists() and not path.is_dir():
        raise GAIRError(f"{out.name} {path} is an existing file, not a folder; choose a folder name")
    parent = Path(os.path.abspath(path)).parent
    existing = parent
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise GAIRError(f"cannot create the folder {parent} of {out.name}: {existing} is a file; choose another "
                        "output folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "create a folder in" if existing != parent else "write to"
        raise GAIRError(f"cannot {what} {existing} (permission denied: read-only folder) for {out.name}; choose "
                        "another output folder")


def _default_suffix(param: Param) -> str:
    return {"raster_out": ".tif", "vector_out": ".gpkg"}.get(param.kind, "")


def _writes_outputs() -> bool:
    """Under torchrun only rank 0 writes (and so locks); the other ranks only check."""
    return int(os.environ.get("RANK", "0") or 0) == 0


@contextmanager
def claimed_outputs(op: Operation | str, values: dict) -> Iterator[list[PathValue]]:
    """Check the call's paths, then hold a lock on each output (removing temp files a killed run of it left)."""
    outputs = check_paths(op, values)
    with ExitStack() as stack:
        if _writes_outputs():
            for out in sorted(outputs, key=lambda o: os.path.realpath(o.path)):
                lock = stack.enter_context(OutputLock(out.path))
                if lock.fresh:
                    for path in out.written():
                        remove_stale_temp_files(path)
        yield outputs


def guarded(function: Callable) -> Callable:
    """Decorate the engine function of the operation of the same name: its paths are checked and its outputs
    locked for the duration of each call."""
    op = OPERATIONS[function.__name__]
    signature = inspect.signature(function)

    @functools.wraps(function)
    def run(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        with claimed_outputs(op, bound.arguments):
            return function(*args, **kwargs)

    return run
