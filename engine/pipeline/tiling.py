"""Crop layout: where the model's fixed-ground-size crops go on a pixel grid, and how much each pixel trusts them.

Crops are laid with at least `overlap` of their side shared with the next one, spread evenly so the first and last
crop sit flush with the grid edges (no crop hangs off the raster; a grid smaller than a crop gets one truncated
crop, as the reference's crop extraction does). Each crop's blend weight is a separable cosine taper that is zero
at crop edges facing another crop and flat elsewhere, so adjacent crops hand over smoothly and pixels on the grid
border still get full weight.
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


def _starts(length: int, crop: int, overlap: int) -> np.ndarray:
    """Evenly spread integer crop starts from 0 to length - crop, consecutive starts at most crop - overlap apart."""
    if length <= crop:
        return np.zeros(1, dtype=np.int64)
    stride = max(1, crop - overlap)
    count = math.ceil((length - crop) / stride) + 1
    return np.rint(np.linspace(0, length - crop, count)).astype(np.int64)


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


@dataclass(frozen=True)
class CropLayout:
    """Crops of crop_h x crop_w pixels over a height x width grid, sharing `overlap` (fraction of a crop) or more."""

    height: int
    width: int
    crop_h: int
    crop_w: int
    overlap: float = 0.5

    def __post_init__(self) -> None:
        if min(self.height, self.width, self.crop_h, self.crop_w) < 1:
            raise GAIRError(f"empty grid or crop: {self}")
        if not 0.0 <= self.overlap < 1.0:
            raise GAIRError(f"crop overlap must be in [0, 1), got {self.overlap}")
        # a grid smaller than a crop gets one truncated crop along that axis
        object.__setattr__(self, "crop_h", min(self.crop_h, self.height))
        object.__setattr__(self, "crop_w", min(self.crop_w, self.width))

    @property
    def ramp_h(self) -> int:
        return int(round(self.overlap * self.crop_h))

    @property
    def ramp_w(self) -> int:
        return int(round(self.overlap * self.crop_w))

    @cached_property
    def row_starts(self) -> np.ndarray:
        return _starts(self.height, self.crop_h, self.ramp_h)

    @cached_property
    def col_starts(self) -> np.ndarray:
        return _starts(self.width, self.crop_w, self.ramp_w)

    @property
    def shape(self) -> tuple[int, int]:
        """Crops per column and per row."""
        return len(self.row_starts), len(self.col_starts)

    def __len__(self) -> int:
        return len(self.row_starts) * len(self.col_starts)

    def origin(self, index: int) -> tuple[int, int]:
        """(row0, col0) of crop `index` (row-major over the crop grid)."""
        r, c = divmod(index, len(self.col_starts))
        return int(self.row_starts[r]), int(self.col_starts[c])

    def touching(self, row0: int, row1: int, col0: int, col1: int) -> list[int]:
        """Crops overlapping the pixel rows [row0, row1) and columns [col0, col1), row-major."""
        rs = np.flatnonzero((self.row_starts < row1) & (self.row_starts + self.crop_h > row0))
        cs = np.flatnonzero((self.col_starts < col1) & (self.col_starts + self.crop_w > col0))
        n = len(self.col_starts)
        return [int(r * n + c) for r in rs for c in cs]

    def weights(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Separable blend weights (wy (crop_h,), wx (crop_w,)): tapered only on sides facing a neighbour crop."""
        r, c = divmod(index, len(self.col_starts))
        nr, nc = self.shape
        wy = taper(self.crop_h, self.ramp_h if r > 0 else 0, self.ramp_h if r < nr - 1 else 0)
        wx = taper(self.crop_w, self.ramp_w if c > 0 else 0, self.ramp_w if c < nc - 1 else 0)
        return wy, wx
