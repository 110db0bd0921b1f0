"""Few-shot search: pixels scored by similarity to positive examples against negative ones, whole or a window,
at full resolution or decimated from the overviews (the map tool's coarse first heatmap).

The score is the mean-difference query (Rocchio): cos(x, mean of positives) - cos(x, mean of negatives), in -2..2,
0 = as close to both. It is chosen over a logistic fit on the clicked embeddings because a handful of clicks in
64+ dimensions is separable in countless ways: the fitted weights would follow the regularisation more than the
ground, change wholesale with each click, and need at least one example of each side. The mean difference is
defined from one positive on, has no parameter to tune, moves smoothly as clicks are added, and with no negatives
it is the plain cosine to the positives' mean (similarity_search's 'mean'). Both cosines are one linear query
((p - n) . x / |x|, p and n unit), so it scans as fast as a plain similarity search.
"""
from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine

from ..errors import Cancelled, GAIRError
from ..io.embedding_raster import TAG_KIND, EmbeddingRaster
from ..io.files import PAM, PendingFile
from ..io.guard import guarded
from .pixels import read_pixels_at
from .similarity import (
    SimilarityHit,
    _peaks_in_memory,
    _top_peaks,
    _write_hits,
    cosine_scan,
    reference_pixels,
    unit_rows,
)

METHOD = "mean difference: cos(x, mean of positives) - cos(x, mean of negatives)"
MAX_WINDOW_PIXELS = 64 * 2**20  # a window scored in memory (256 MB of float32): the visible extent of a canvas
ROWS_PER_READ = 256


@dataclass
class FewShotResult:
    path: Path
    positives: int
    negatives: int
    method: str
    factor: int  # source pixels per output pixel along a side (1 = full resolution)
    window: tuple[int, int, int, int]  # col_off, row_off, width, height of the source raster scored
    width: int  # output pixels
    height: int
    hits: list[SimilarityHit] = field(default_factory=list)
    hits_path: Path | None = None
    valid_pixels: int = 0
    seconds: float = 0.0


def fewshot_query(positives: np.ndarray, negatives: np.ndarray | None = None) -> np.ndarray:
    """(1, K) query row q with q . x / |x| = cos(x, mean positive) - cos(x, mean negative) (unit means of unit
    vectors); without negatives, the unit mean of the positives."""
    query = unit_rows(unit_rows(positives).mean(axis=0))
    if negatives is not None and len(negatives):
        query = query - unit_rows(unit_rows(negatives).mean(axis=0))
        if not np.any(query):
            raise GAIRError("the positive and negative examples have the same mean; click different places")
    return query


@guarded
def fewshot_search(raster_path: str | os.PathLike, out_path: str | os.PathLike, *,
                   positives: Sequence[tuple[float, float]], negatives: Sequence[tuple[float, float]] | None = None,
                   points_crs=None, top_k: int = 10, min_distance_px: int = 5, exclude_radius_px: int | None = None,
                   hits_path: str | os.PathLike | None = None, max_pixels: int | None = None,
                   extent: Sequence[float] | None = None, extent_crs=None,
                   progress: Callable[[float], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> FewShotResult:
    """Score raster pixels (or those of `extent`, xmin ymin xmax ymax in extent_crs, default the raster's CRS) by
    the mean-difference query of the example points, writing a float32 score raster (NaN nodata) on the scored
    grid and the top-k peaks. max_pixels: score at most this many pixels, reading a decimated raster (nearest, from
    the file's overviews when it has them): a coarse heatmap of a whole tile in well under a second.
    Top places closer than exclude_radius_px (default min_distance_px; source pixels) to a positive are left out.
    A grid up to MAX_WINDOW_PIXELS is scored in memory; the whole raster at full resolution beyond that is streamed
    (strips written as they are scored, the peaks found in the written file)."""
    started = time.perf_counter()
    if not positives:
        raise GAIRError("give at least one positive example point")
    with EmbeddingRaster(raster_path) as raster:
        pos_pixels = reference_pixels(raster, positives, points_crs)
        neg_pixels = reference_pixels(raster, negatives, points_crs) if negatives else np.empty((0, 2), np.int64)
        query = fewshot_query(_vectors(raster, pos_pixels, "positive"),
                              _vectors(raster, neg_pixels, "negative") if len(neg_pixels) else None)
        window = _window(raster, extent, extent_crs)
        height, width, step_rows, step_cols = _output_shape(int(window.height), int(window.width), max_pixels)
        whole = (int(window.width), int(window.height)) == (raster.width, raster.height)
        in_memory = height * width <= MAX_WINDOW_PIXELS
        if not in_memory and not (whole and step_rows == step_cols == 1):
            raise GAIRError(f"{height} x {width} px is too many to score at once; give max_pixels (e.g. 4000000), a "
                            "smaller extent or no extent (the whole raster at full resolution is streamed)")
        transform = raster.transform * Affine.translation(window.col_off, window.row_off) \
            * Affine.scale(step_cols, step_rows)
        factor = max(step_rows, step_cols)
        radius = min_distance_px if exclude_radius_px is None else exclude_radius_px
        out = _ScoreWriter(out_path, raster, transform, width, height, {
            "GAIR_POSITIVES": str(len(pos_pixels)), "GAIR_NEGATIVES": str(len(neg_pixels)),
            "GAIR_DECIMATION": str(factor)})
        try:
            scores = np.empty((height, width), np.float32) if in_memory else None
            valid = _score(raster, query, window, height, width, step_rows, step_cols, out, scores, progress,
                           cancel)
            hits: list[SimilarityHit] = []
            if top_k > 0 and scores is None:  # a whole raster beyond memory: the peaks from the written file
                hits = _top_peaks(raster, out.close(), top_k, min_distance_px, None, pos_pixels, radius)
            elif top_k > 0:
                # positives in output pixels; distances scale with the decimation (at least one output pixel)
                excluded = np.stack([(pos_pixels[:, 0] - window.row_off) // step_rows,
                                     (pos_pixels[:, 1] - window.col_off) // step_cols], axis=1).astype(np.int64)
                peaks = _peaks_in_memory(scores, top_k, max(1, round(min_distance_px / factor)), None, excluded,
                                         radius / factor if radius > 0 else 0)
                xs, ys = transform * (np.array([p[2] for p in peaks], float) + 0.5,
                                      np.array([p[1] for p in peaks], float) + 0.5)
                hits = [SimilarityHit(i + 1, score, float(x), float(y),
                                      int(window.row_off + row * step_rows + step_rows // 2),
                                      int(window.col_off + col * step_cols + step_cols // 2))
                        for i, ((score, row, col), x, y) in enumerate(zip(peaks, np.atleast_1d(xs),
                                                                           np.atleast_1d(ys)))]
            if cancel is not None and cancel():
                raise Cancelled()
            written_hits = _write_hits(hits_path, hits, raster.crs) if hits_path is not None and hits else None
        except BaseException:
            out.abort()
            raise
        try:
            out.commit()
        except BaseException:
            if written_hits is not None:
                written_hits.unlink(missing_ok=True)
            raise
    if progress is not None:
        progress(1.0)
    return FewShotResult(Path(out_path), len(pos_pixels), len(neg_pixels), METHOD, factor,
                         (int(window.col_off), int(window.row_off), int(window.width), int(window.height)),
                         width, height, hits, written_hits, valid, time.perf_counter() - started)


def _vectors(raster: EmbeddingRaster, pixels: np.ndarray, what: str) -> np.ndarray:
    vectors = read_pixels_at(raster, pixels[:, 0], pixels[:, 1])
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise GAIRError(f"{what} example(s) {np.flatnonzero(bad).tolist()} fall on nodata pixels; click elsewhere")
    return vectors


def _window(raster: EmbeddingRaster, extent, extent_crs):
    """The whole-pixel window of the raster covering `extent` (all of it without one)."""
    from rasterio.windows import Window

    if extent is None:
        return Window(0, 0, raster.width, raster.height)
    xmin, ymin, xmax, ymax = (float(v) for v in extent)
    if not (xmin < xmax and ymin < ymax):
        raise GAIRError(f"extent {tuple(extent)} is empty; give xmin ymin xmax ymax with xmin < xmax, ymin < ymax")
    if extent_crs is not None:
        from rasterio.warp import transform_bounds

        try:
            xmin, ymin, xmax, ymax = transform_bounds(extent_crs, raster.crs, xmin, ymin, xmax, ymax, densify_pts=21)
        except Exception as exc:  # noqa: BLE001 - any CRS problem is the user's to fix
            raise GAIRError(f"cannot use the extent's CRS {str(extent_crs)[:80]!r}: {exc}") from exc
    cols, rows = ~raster.transform * (np.array([xmin, xmax, xmin, xmax]), np.array([ymin, ymin, ymax, ymax]))
    c0, r0 = max(int(np.floor(cols.min())), 0), max(int(np.floor(rows.min())), 0)
    c1, r1 = min(int(np.ceil(cols.max())), raster.width), min(int(np.ceil(rows.max())), raster.height)
    if c1 <= c0 or r1 <= r0:
        raise GAIRError(f"the extent does not overlap {raster.path.name}; choose an extent inside it")
    return Window(c0, r0, c1 - c0, r1 - r0)


def _output_shape(height: int, width: int, max_pixels: int | None) -> tuple[int, int, int, int]:
    """(height, width, row step, col step) of the scored grid: the window, or every f-th pixel of it (a whole
    factor, so each output pixel stands for an f x f block) with at most max_pixels pixels; the last source rows and
    columns that do not fill a block (< f) are left out of a decimated grid."""
    if max_pixels is None or height * width <= max_pixels:
        return height, width, 1, 1
    factor = math.ceil(math.sqrt(height * width / max(int(max_pixels), 1)))
    while max(1, height // factor) * max(1, width // factor) > max_pixels:
        factor += 1
    out_h, out_w = max(1, height // factor), max(1, width // factor)
    # one output row (column) when the window is thinner than a block: it stands for all of the window's
    return out_h, out_w, factor if height >= factor else height, factor if width >= factor else width


def _score(raster: EmbeddingRaster, query: np.ndarray, window, height: int, width: int, step_rows: int,
           step_cols: int, out: _ScoreWriter, scores: np.ndarray | None, progress, cancel) -> int:
    """Scores of `window`, every step-th pixel (nearest; GDAL reads the overviews), in strips of rows written to
    `out` as they come (and kept in `scores` when given), so a full-resolution raster never sits in memory as
    float32; cancel between strips. Returns the number of valid (finite) scores."""
    from rasterio.windows import Window

    to_float = functools.partial(raster.to_float, unit=False)  # cosine is scale-free: int8 without the 1/127
    strip_rows = max(1, ROWS_PER_READ // step_rows)  # output rows per strip: ~ROWS_PER_READ source rows
    buffer = np.empty(raster.dims * min(strip_rows, height) * width, raster.dtype)  # one strip, reused
    strip_scores = np.empty((min(strip_rows, height), width), np.float32)
    valid = 0
    for top in range(0, height, strip_rows):
        if cancel is not None and cancel():
            raise Cancelled()
        rows = min(strip_rows, height - top)
        strip = Window(int(window.col_off), int(window.row_off) + top * step_rows, width * step_cols,
                       rows * step_rows)
        block = raster.read_raw(strip, buffer, shape=(rows, width) if step_rows > 1 or step_cols > 1 else None)
        values = scores[top:top + rows] if scores is not None else strip_scores[:rows]
        cosine_scan(block.reshape(raster.dims, -1), query, values.reshape(-1), to_float=to_float)
        out.write(top, values)
        valid += int(np.isfinite(values).sum())
        if progress is not None:
            progress(0.95 * (top + rows) / height)
    return valid


class _ScoreWriter:
    """The score raster on its own grid (a window and/or decimation of the raster's), written strip by strip to a
    temporary file and committed at the end (or aborted: no file); a GAIR similarity raster, so it is styled and
    refused as an embedding like the others."""

    def __init__(self, path, raster: EmbeddingRaster, transform, width: int, height: int, tags: dict) -> None:
        import rasterio

        target = Path(path)
        if target.resolve() == raster.path.resolve():
            raise GAIRError(f"output {target} would overwrite its input raster; choose another name")
        self._pending = PendingFile(target, sidecars=(PAM,))
        self.width = width
        profile = {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "float32",
                   "crs": raster.crs, "transform": transform, "nodata": float("nan"), "compress": "zstd",
                   "zstd_level": 1, "BIGTIFF": "IF_SAFER",
                   **({"tiled": True, "blockxsize": 256, "blockysize": 256} if min(width, height) >= 256 else {})}
        try:
            self.ds = rasterio.open(self._pending.tmp, "w", **profile)
            self.ds.update_tags(**{TAG_KIND: "similarity", "GAIR_SOURCE": raster.path.name,
                                   "GAIR_SOURCE_SPACE": raster.meta.space.id,
                                   "GAIR_QUERY": "fewshot_mean_difference", **tags})
            self.ds.set_band_description(1, "few-shot score: cos to positives - cos to negatives")
        except BaseException:
            self._pending.abort()
            raise

    def write(self, top: int, rows: np.ndarray) -> None:
        from rasterio.windows import Window

        self.ds.write(rows[None], window=Window(0, top, self.width, rows.shape[0]))

    def close(self) -> Path:
        """Finish writing; the temporary file can be read back (the peaks of a streamed raster) before commit()."""
        if not self.ds.closed:
            self.ds.close()
        return self._pending.tmp

    def commit(self) -> Path:
        self.close()
        return self._pending.commit()

    def abort(self) -> None:
        self.close()
        self._pending.abort()
