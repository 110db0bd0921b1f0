"""The one block iterator: tile-aligned windows over a raster grid, walked with cancel checks and progress."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from ..errors import Cancelled

Progress = Callable[[float], None] | None
Cancel = Callable[[], bool] | None


def block_windows(height: int, width: int, block_h: int, block_w: int) -> list:
    """Row-major rasterio Windows of at most block_h x block_w covering a height x width grid."""
    from rasterio.windows import Window

    return [Window(c, r, min(block_w, width - c), min(block_h, height - r))
            for r in range(0, height, block_h) for c in range(0, width, block_w)]


def one_blas_thread():
    """Context: BLAS on one thread. The block scans are memory-bound products of a few rows by thousands of
    columns; extra BLAS threads only add synchronisation (5x slower assignments measured on a busy 2-core box)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def walk(windows: Sequence, progress: Progress = None, cancel: Cancel = None, what: str = "working") -> Iterator:
    """Yield each window; raise Cancelled before a window when cancel() says so, report progress after each."""
    for i, window in enumerate(windows):
        if cancel is not None and cancel():
            raise Cancelled(f"cancelled while {what}")
        yield window
        if progress is not None:
            progress((i + 1) / len(windows))
