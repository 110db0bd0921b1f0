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


def _axis_geometry(crop: int, overlap: float, trim: int) -> tuple[int, int, int]:
    """(stride, trim, ramp) along one axis: crops `stride` apart, zero weight over `trim` pixels at each edge, a sin^2
    ramp of `ramp` pixels after it. Neighbouring ramps overlap exactly (stride + 2 trim + ramp = crop), so the weights
    of the crops covering any pixel sum to one."""
    stride = max(1, crop - int(round(overlap * crop)))
    trim = max(0, min(int(trim), (crop - stride) // 2))
    return stride, trim, crop - stride - 2 * trim


@dataclass(frozen=True)
class AnchoredLayout:
    """Crops on a fixed grid anchored to the raster's origin, covering a height x width window of the output grid.

    The window starts `row_off`, `col_off` output pixels from the raster's origin; crop k along an axis starts at
    k * stride - trim in raster pixels whatever the window, so a pixel's crops (and its embedding) do not depend on
    the extent asked for. Crops reach past the window (and past the raster, where the reader pads) so that every
    pixel, the raster border included, is blended from crop interiors: each crop's weight is zero over `trim`
    pixels at every edge (the token cells whose NILI neighbourhood is zero padding) and tapers over the overlap.
    Local coordinates (origins, touching) are relative to the window; origins may be negative.
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

    def __post_init__(self) -> None:
        if min(self.height, self.width, self.crop_h, self.crop_w) < 1:
            raise GAIRError(f"empty grid or crop: {self}")
        if not 0.0 <= self.overlap < 1.0:
            raise GAIRError(f"crop overlap must be in [0, 1), got {self.overlap}")

    @cached_property
    def _rows(self) -> tuple[int, int, int]:
        return _axis_geometry(self.crop_h, self.overlap, self.trim_h)

    @cached_property
    def _cols(self) -> tuple[int, int, int]:
        return _axis_geometry(self.crop_w, self.overlap, self.trim_w)

    @staticmethod
    def _starts(offset: int, length: int, crop: int, geometry: tuple[int, int, int]) -> np.ndarray:
        """Local starts of the grid's crops whose weighted part [start + trim, start + crop - trim) meets [0, length)."""
        stride, trim, _ = geometry
        first = math.floor((offset + 2 * trim - crop) / stride) + 1  # k * stride - trim + crop - trim > offset
        last = math.ceil((offset + length) / stride) - 1             # k * stride - trim + trim < offset + length
        return np.arange(first, last + 1, dtype=np.int64) * stride - trim - offset

    @cached_property
    def row_starts(self) -> np.ndarray:
        return self._starts(self.row_off, self.height, self.crop_h, self._rows)

    @cached_property
    def col_starts(self) -> np.ndarray:
        return self._starts(self.col_off, self.width, self.crop_w, self._cols)

    @property
    def stride(self) -> tuple[int, int]:
        return self._rows[0], self._cols[0]

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
        th, tw = self._rows[1], self._cols[1]
        rs = np.flatnonzero((self.row_starts + th < row1) & (self.row_starts + self.crop_h - th > row0))
        cs = np.flatnonzero((self.col_starts + tw < col1) & (self.col_starts + self.crop_w - tw > col0))
        n = len(self.col_starts)
        return [int(r * n + c) for r in rs for c in cs]

    @cached_property
    def _weights(self) -> tuple[np.ndarray, np.ndarray]:
        def axis(crop: int, geometry: tuple[int, int, int]) -> np.ndarray:
            _, trim, ramp = geometry
            w = np.zeros(crop, dtype=np.float32)
            w[trim:crop - trim] = taper(crop - 2 * trim, ramp, ramp)
            return w

        return axis(self.crop_h, self._rows), axis(self.crop_w, self._cols)

    def weights(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Separable blend weights (wy (crop_h,), wx (crop_w,)), the same for every crop."""
        return self._weights
