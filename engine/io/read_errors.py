"""One line for a file that cannot be read: damaged or cut-short rasters, and files another user has not shared.

GDAL reports a truncated GeoTIFF only when a missing block is read ("Read failed. See previous exception"), deep in
a scan; these helpers turn that, and permission errors, into a GAIRError naming the file and the problem.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import GAIRError

PERMISSION_HINT = "it belongs to another user who has not shared it: ask them to make it readable (chmod a+r)"


def one_line(text: object, limit: int = 240) -> str:
    """An exception's text on one line, cut to `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _gdal_detail(exc: BaseException) -> str:
    """The most specific message in the exception chain (rasterio puts GDAL's own text in the cause)."""
    messages = []
    while exc is not None and len(messages) < 4:
        messages.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    specific = [m for m in messages if m and "See previous exception" not in m]
    return one_line(specific[-1] if specific else messages[0])


def permission_error(path: str | os.PathLike, what: str = "file") -> GAIRError:
    return GAIRError(f"cannot read {what} {path}: permission denied; {PERMISSION_HINT}")


@contextmanager
def raster_read_errors(path: str | os.PathLike, opening: bool = False) -> Iterator[None]:
    """Turn GDAL failures of `path` into one line: opening -> not a raster (or damaged), reading -> damaged or cut
    short."""
    import rasterio.errors
    from rasterio._err import CPLE_BaseError  # GDAL's errors (rasterio.errors does not re-export their base)

    try:
        yield
    except PermissionError as exc:
        raise permission_error(path, "raster") from exc
    except (rasterio.errors.RasterioIOError, CPLE_BaseError) as exc:
        if opening and not os.path.lexists(path) and "://" not in str(path):
            raise GAIRError(f"raster {path} does not exist") from exc
        if opening:
            raise GAIRError(f"cannot open raster {Path(path).name}: not a raster GDAL can read, or damaged: "
                            f"{_gdal_detail(exc)}") from exc
        raise GAIRError(f"cannot read raster {Path(path).name}: it is damaged or cut short (an interrupted copy or "
                        f"download?): {_gdal_detail(exc)}; copy or write it again") from exc


def check_readable_file(path: str | os.PathLike, what: str) -> Path:
    """A regular file this user can open: one line for missing, not a regular file (a FIFO, a device, a folder)
    and permission denied. Opening it for reading checks the permission whoever runs (root sees through modes)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except PermissionError as exc:
        raise permission_error(path, what) from exc
    except FileNotFoundError as exc:
        raise GAIRError(f"{what} {path} does not exist") from exc
    except OSError as exc:
        raise GAIRError(f"cannot read {what} {path}: {exc.strerror}") from exc
    import stat

    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a pipe, socket or device)"
        raise GAIRError(f"{what} {path} is {kind}; give a file")
    try:
        with path.open("rb"):
            pass
    except PermissionError as exc:
        raise permission_error(path, what) from exc
    return path
