"""Output files: atomic writes (temp file beside the target, then os.replace), the files an output consists of, and
the per-output lock.

Every file the engine writes goes through `PendingFile` or its context-manager form `atomic_path`, so a failed or
cancelled run leaves neither a half-written file nor a stray temp file. `output_files` is the one list of the files
(sidecars included) that make up an output, for whoever deletes or moves outputs (the plugin's clean-up).
`OutputLock` keeps two runs from writing the same output at once; whoever takes it also removes the temp files a
killed run of that output left behind (nobody else can be writing them).
"""
from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

PAM = ".aux.xml"  # GDAL's sidecar for what a format cannot store itself (georeferencing of a PNG, class names)
_GDAL_LEFTOVERS = (PAM, "-wal", "-shm", "-journal")  # files GDAL may create beside a dataset it writes


def pca_sidecar_path(raster_path: str | os.PathLike) -> Path:
    """`<raster stem>.pca.npz` beside an embedding raster reduced by PCA."""
    path = Path(raster_path)
    return path.with_name(path.stem + ".pca.npz")


def quicklook_path(raster_path: str | os.PathLike) -> Path:
    """`<raster stem>.quicklook.png` beside an embedding raster (georeferenced by its `.aux.xml`)."""
    path = Path(raster_path)
    return path.with_name(path.stem + ".quicklook.png")


def current_umask() -> int:
    """The process umask, read without changing it where /proc says it (os.umask can only set it)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(folder: bool = False) -> int:
    """The mode a plain open()/mkdir() would give: 0o666 (files) or 0o777 (folders) less the user's umask, so
    colleagues can read outputs whenever the user's umask lets them (temp files and mkdtemp folders are private)."""
    return (0o777 if folder else 0o666) & ~current_umask()


def output_files(path: str | os.PathLike, existing_only: bool = True) -> list[Path]:
    """The files an engine output at `path` consists of, main file first: the raster or layer, GDAL's `.aux.xml`
    and GeoPackage journals, the PCA sidecar, the quicklook and its `.aux.xml`. existing_only=False lists every
    name the engine may write, so a clean-up can remove all of them."""
    path = Path(path)
    look = quicklook_path(path)
    names = [path, *(Path(str(path) + s) for s in _GDAL_LEFTOVERS), pca_sidecar_path(path), look,
             Path(str(look) + PAM)]
    return [p for p in names if not existing_only or p.is_file()]


class PendingFile:
    """A hidden temp path beside `target` (same folder, so the final rename is atomic).

    `commit()` moves it into place, `abort()` removes it and whatever GDAL left beside it. `sidecars` are suffixes
    (e.g. ".aux.xml") of companion files that travel with the file: moved along on commit, and a stale companion of
    an older target is removed so it cannot describe the new file.
    """

    def __init__(self, target: str | os.PathLike, suffix: str | None = None, sidecars: tuple[str, ...] = ()) -> None:
        self.target = Path(target)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.target.with_name(f"{temp_prefix(self.target)}{uuid.uuid4().hex[:8]}"
                                         f"{suffix or self.target.suffix}")
        self.sidecars = sidecars

    def commit(self) -> Path:
        try:
            os.chmod(self.tmp, default_mode())
            for suffix in self.sidecars:
                own, stale = Path(str(self.tmp) + suffix), Path(str(self.target) + suffix)
                if own.is_file():
                    os.replace(own, stale)
                else:
                    stale.unlink(missing_ok=True)
            os.replace(self.tmp, self.target)
        finally:
            self.abort()
        return self.target

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)
        for suffix in _GDAL_LEFTOVERS:
            Path(str(self.tmp) + suffix).unlink(missing_ok=True)


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None,
                sidecars: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a temp path beside `target`; it replaces `target` (mode from the user's umask) when the block succeeds,
    else is removed."""
    pending = PendingFile(target, suffix, sidecars)
    try:
        yield pending.tmp
    except BaseException:
        pending.abort()
        raise
    pending.commit()


# ---- temp files of killed runs, and the per-output lock ------------------------------------------------------------
def temp_prefix(target: str | os.PathLike) -> str:
    """Name start of every temp file of `target` (`.<name>.tmp-`): the whole name, so `x.tif` and `x.gpkg` differ."""
    return f".{Path(target).name}.tmp-"


_OLD_TEMP = r"\.{stem}\.tmp-[0-9a-f]{{8}}{suffix}(\.aux\.xml|-wal|-shm|-journal)?"  # before temp_prefix


def stale_temp_files(target: str | os.PathLike) -> list[Path]:
    """Temp files of `target` in its folder (also GDAL's leftovers beside them, and the older `.<stem>.tmp-` names).
    Only stale while the caller holds the target's `OutputLock`."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    prefix = temp_prefix(target)
    old = re.compile(_OLD_TEMP.format(stem=re.escape(target.stem), suffix=re.escape(target.suffix)))
    return sorted(p for p in target.parent.iterdir()
                  if (p.name.startswith(prefix) or old.fullmatch(p.name)) and (p.is_file() or p.is_symlink()))


def remove_stale_temp_files(target: str | os.PathLike) -> list[Path]:
    """Remove the temp files a killed run of `target` left; returns them."""
    removed = []
    for path in stale_temp_files(target):
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    if removed:
        log.info(f"removed {len(removed)} temp file(s) of {Path(target).name} left by an interrupted run")
    return removed


def lock_file_path(target: str | os.PathLike) -> Path:
    """The hidden lock file beside an output: `.<name>.lock`."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


class OutputLock:
    """An exclusive, non-blocking lock on one output: `flock` on `.<name>.lock` beside it, holding the writer's pid.

    Re-entrant within a thread (an operation that calls another on the same output); another thread or process gets
    "X is being written by another run (pid N)" at once. The lock file is removed on release. The OS drops the lock
    when its holder dies, so a killed run never blocks the next one.
    """

    _held: dict[str, list] = {}  # lock file realpath -> [thread ident, depth, fd]
    _registry = threading.Lock()

    def __init__(self, target: str | os.PathLike) -> None:
        self.target = Path(target)
        self.path = lock_file_path(self.target)
        self.key = os.path.realpath(self.path)
        self.fresh = False  # True when this acquire took the lock (not re-entered): the target's temps are stale

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        from ..errors import GAIRError

        with self._registry:
            held = self._held.get(self.key)
            if held is not None:
                if held[0] != threading.get_ident():
                    raise GAIRError(self._busy(os.getpid()))
                held[1] += 1
                self.fresh = False
                return
            while True:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
                except OSError as exc:
                    raise GAIRError(f"cannot write {self.target}: {exc.strerror or exc} in {self.path.parent}; "
                                    "choose another output folder") from None
                if not _try_lock(fd):
                    pid = _read_pid(fd)
                    os.close(fd)
                    raise GAIRError(self._busy(pid))
                if _same_file(fd, self.path):  # else its last holder removed it between our open and lock: retry
                    break
                os.close(fd)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._held[self.key] = [threading.get_ident(), 1, fd]
            self.fresh = True

    def release(self) -> None:
        with self._registry:
            held = self._held.get(self.key)
            if held is None or held[0] != threading.get_ident():
                return
            held[1] -= 1
            if held[1]:
                return
            del self._held[self.key]
            if os.name != "nt":  # unlink while locked: a waiting opener sees a different file and retries
                Path(self.path).unlink(missing_ok=True)
            os.close(held[2])
            if os.name == "nt":
                try:
                    Path(self.path).unlink(missing_ok=True)
                except OSError:
                    pass

    def _busy(self, pid: int | None) -> str:
        return (f"{self.target} is being written by another run (pid {pid if pid else 'unknown'}); wait for it to "
                "finish or choose another output")


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0) if hasattr(os, "pread") else b""
        return int(text.decode().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False
