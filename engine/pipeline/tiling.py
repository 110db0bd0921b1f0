"""Crop layout: where the model's fixed-ground-size crops go on a pixel grid, and how much each pixel trusts them.

Crops sit on one grid anchored at the raster's origin, `overlap` of their side shared with the next one, whatever
window (extent) is asked for, so a pixel's embedding does not depend on it. The grid reaches past the window and past
the raster (the reader mirrors the scene there), so border pixels are blended from crop interiors like any other.
Each crop's blend weight is a separable sin^2 taper over the overlap (weights sum to one), flat towards the scene's
edge. Issue 13 and README "Seamless rasters" give the measurements behind the defaults.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import GAIRError

# Metres per degree used for geographic rasters: the equatorial degree, the convention of "10 m" EPSG:4326 exports
# (0.0000898 deg pixels); the reference crops 224 such pixels whatever the latitude, so we do the same.
METRES_PER_DEGREE = 6378137.0 * math.pi / 180.0


def metres_per_unit(crs) -> float:
    """Ground metres per CRS unit along the axes (degrees: the equatorial convention above)."""
    if crs is None:
        raise GAIRError("the raster has no CRS, so crop sizes on the ground are unknown; assign one "
                        "(e.g. gdal_edit.py -a_srs EPSG:32633 file.tif, or in QGIS: Layer > Set CRS) and retry")
    if crs.is_geographic:
        return METRES_PER_DEGREE
    factor = crs.linear_units_factor[1]
    if not factor or not math.isfinite(factor):
        raise GAIRError(f"cannot tell the linear unit of CRS {crs}; reproject the raster to a metric CRS")
    return float(factor)


def taper(size: int, ramp_start: int, ramp_end: int) -> np.ndarray:
    """Weights at pixel centres: sin^2 rising over the first `ramp_start` pixels, falling over the last `ramp_end`."""
    t = np.arange(size, dtype=np.float64) + 0.5
    w = np.ones(size, dtype=np.float64)
    if ramp_start:
        w = np.where(t < ramp_start, np.sin(0.5 * np.pi * np.minimum(t / ramp_start, 1)) ** 2, w)
    if ramp_end:
        u = size - t
        w = np.where(u < ramp_end, w * np.sin(0.5 * np.pi * np.minimum(u / ramp_end, 1)) ** 2, w)
    return w.astype(np.float32)


def _axis_geometry(crop: int, overlap: float, trim: int) -> tuple[int, int, int]:
    """(stride, trim, ramp) along one axis: crops `stride` apart, zero weight over `trim` pixels at each edge, a sin^2
    ramp of `ramp` pixels after it. Neighbouring ramps overlap exactly (stride + 2 trim + ramp = crop), so the weights
    of the crops covering any pixel sum to one."""
    stride = max(1, crop - int(round(overlap * crop)))
    trim = max(0, min(int(trim), (crop - stride) // 2))
    return stride, trim, crop - stride - 2 * trim


@dataclass(frozen=True)
class _Axis:
    """One axis of an anchored crop grid: crop k starts at k * stride - phase (raster pixels) and weighs its pixels
    with the taper; with a `scene` length only crops 0..last exist, flat (no taper) on the side facing the scene's
    edge, crop 0 starting `margin` pixels before the raster and the last one ending at least `margin` past it."""

    offset: int
    length: int
    crop: int
    overlap: float
    trim_asked: int
    scene: int
    margin: int

    @cached_property
    def geometry(self) -> tuple[int, int, int]:
        return _axis_geometry(self.crop, self.overlap, self.trim_asked)

    @property
    def stride(self) -> int:
        return self.geometry[0]

    @property
    def phase(self) -> int:
        return self.margin if self.scene else self.geometry[1]

    @property
    def last(self) -> int | None:
        if not self.scene:
            return None
        return max(0, math.ceil((self.scene + 2 * self.margin - self.crop) / self.stride))

    def span(self, k: int) -> tuple[int, int]:
        """(first, end) raster pixel of crop k's weighted part, relative to the crop's start."""
        trim = self.geometry[1]
        first = 0 if self.scene and k == 0 else trim
        end = self.crop if self.scene and k == self.last else self.crop - trim
        return first, end

    @cached_property
    def ks(self) -> np.ndarray:
        """Grid indices of the crops whose weighted part meets the window."""
        lo = math.floor((self.offset + self.phase - self.crop) / self.stride)
        hi = math.ceil((self.offset + self.length + self.phase) / self.stride)
        if self.scene:
            lo, hi = max(lo, 0), min(hi, self.last)
        ks = []
        for k in range(lo, hi + 1):
            first, end = self.span(k)
            start = k * self.stride - self.phase
            if start + first < self.offset + self.length and start + end > self.offset:
                ks.append(k)
        return np.asarray(ks, dtype=np.int64)

    @cached_property
    def starts(self) -> np.ndarray:
        """Window-relative starts of those crops."""
        return self.ks * self.stride - self.phase - self.offset

    def weights(self, k: int) -> np.ndarray:
        first, end = self.span(k)
        ramp = self.geometry[2]
        w = np.zeros(self.crop, dtype=np.float32)
        w[first:end] = taper(end - first, 0 if self.scene and k == 0 else ramp,
                             0 if self.scene and k == self.last else ramp)
        return w


@dataclass(frozen=True)
class AnchoredLayout:
    """Crops on a fixed grid anchored to the raster's origin, covering a height x width window of the output grid.

    The window starts `row_off`, `col_off` output pixels from the raster's origin; crops sit on one grid of the
    raster whatever the window, so a pixel's crops (and its embedding) do not depend on the extent asked for. Crops
    reach past the window (the reader reads the raster there) and past the raster (the reader mirrors the scene),
    so pixels at the border are blended from crop interiors as inside: border token cells see NILI's zero padding.
    With the raster's size (`scene_h`, `scene_w`) the grid starts `margin` pixels before the raster and its outer
    crops keep full weight towards the scene's edge (fewer crops than tapering there too: the border pixels still
    sit `margin` pixels inside them); without it the grid is unbounded and every crop tapers on every side.
    `trim` pixels at interior crop edges get no weight. Local coordinates are relative to the window.
    """

    height: int
    width: int
    crop_h: int
    crop_w: int
    overlap: float = 0.5
    row_off: int = 0
    col_off: int = 0
    trim_h: int = 0
    trim_w: int = 0
    scene_h: int = 0
    scene_w: int = 0
    margin_h: int = 0
    margin_w: int = 0

    def __post_init__(self) -> None:
        if min(self.height, self.width, self.crop_h, self.crop_w) < 1:
            raise GAIRError(f"empty grid or crop: {self}")
        if not 0.0 <= self.overlap < 1.0:
            raise GAIRError(f"crop overlap must be in [0, 1), got {self.overlap}")

    @cached_property
    def rows(self) -> _Axis:
        return _Axis(self.row_off, self.height, self.crop_h, self.overlap, self.trim_h, self.scene_h, self.margin_h)

    @cached_property
    def cols(self) -> _Axis:
        return _Axis(self.col_off, self.width, self.crop_w, self.overlap, self.trim_w, self.scene_w, self.margin_w)

    @property
    def row_starts(self) -> np.ndarray:
        return self.rows.starts

    @property
    def col_starts(self) -> np.ndarray:
        return self.cols.starts

    @property
    def stride(self) -> tuple[int, int]:
        return self.rows.stride, self.cols.stride

    @property
    def shape(self) -> tuple[int, int]:
        """Crops per column and per row."""
        return len(self.row_starts), len(self.col_starts)

    def __len__(self) -> int:
        return len(self.row_starts) * len(self.col_starts)

    def origin(self, index: int) -> tuple[int, int]:
        """Local (row0, col0) of crop `index` (row-major over the crop grid); negative before the window."""
        r, c = divmod(index, len(self.col_starts))
        return int(self.row_starts[r]), int(self.col_starts[c])

    def touching(self, row0: int, row1: int, col0: int, col1: int) -> list[int]:
        """Crops giving weight to local pixel rows [row0, row1) and columns [col0, col1), row-major."""
        def hits(axis: _Axis, lo: int, hi: int) -> list[int]:
            return [j for j, (k, start) in enumerate(zip(axis.ks, axis.starts))
                    if start + axis.span(int(k))[0] < hi and start + axis.span(int(k))[1] > lo]

        n = len(self.col_starts)
        return [r * n + c for r in hits(self.rows, row0, row1) for c in hits(self.cols, col0, col1)]

    def weights(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Separable blend weights (wy (crop_h,), wx (crop_w,)) of crop `index`."""
        r, c = divmod(index, len(self.col_starts))
        return self.rows.weights(int(self.rows.ks[r])), self.cols.weights(int(self.cols.ks[c]))
