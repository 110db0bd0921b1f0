"""Output files: atomic writes (temp file beside the target, then os.replace) and the files an output consists of.

Every file the engine writes goes through `PendingFile` or its context-manager form `atomic_path`, so a failed or
cancelled run leaves neither a half-written file nor a stray temp file. `output_files` is the one list of the files
(sidecars included) that make up an output, for whoever deletes or moves outputs (the plugin's clean-up).
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
        self.tmp = self.target.with_name(f".{self.target.stem}.tmp-{uuid.uuid4().hex[:8]}"
                                         f"{suffix or self.target.suffix}")
        self.sidecars = sidecars

    def commit(self) -> Path:
        try:
            os.chmod(self.tmp, 0o644)
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
    """Yield a temp path beside `target`; it replaces `target` (mode 644) when the block succeeds, else is removed."""
    pending = PendingFile(target, suffix, sidecars)
    try:
        yield pending.tmp
    except BaseException:
        pending.abort()
        raise
    pending.commit()
