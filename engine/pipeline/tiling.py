"""Crop layout: one lattice of token cells per raster, the model's crops laid on it, and each cell's blend weights.

A crop of `crop` pixels carries G x G tokens, one per cell of `crop / G` pixels. Every crop of a raster sits on one
lattice of such cells anchored `margin` pixels before the raster's origin (the reader mirrors the scene there), crop
k starting at cell k * stride (the last one pulled back to end with the lattice), whatever window (extent) is asked
for: so a pixel's embedding does not depend on it.
A cell's token is the weighted mean of the tokens the crops covering it give it (a sin^2 taper over the overlapping
cells, flat at the lattice's ends), and NILI then reads the lattice like one large token grid: a pixel near a crop's
edge sees its real neighbours, never the zero padding of one crop's grid. Issue 13 and README "Seamless rasters"
give the measurements behind the defaults.
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
    """Weights at cell centres: sin^2 rising over the first `ramp_start` cells, falling over the last `ramp_end`."""
    t = np.arange(size, dtype=np.float64) + 0.5
    w = np.ones(size, dtype=np.float64)
    if ramp_start:
        w = np.where(t < ramp_start, np.sin(0.5 * np.pi * np.minimum(t / ramp_start, 1)) ** 2, w)
    if ramp_end:
        u = size - t
        w = np.where(u < ramp_end, w * np.sin(0.5 * np.pi * np.minimum(u / ramp_end, 1)) ** 2, w)
    return w.astype(np.float32)


def overlap_cells(overlap: float, cells: int) -> int:
    """Token cells shared by neighbouring crops for an overlap given as a fraction of a crop (rounded)."""
    if not 0.0 <= overlap < 1.0:
        raise GAIRError(f"crop overlap must be in [0, 1), got {overlap}")
    return min(cells - 1, int(round(overlap * cells)))


@dataclass(frozen=True)
class LatticeAxis:
    """One axis of a raster's lattice: `scene` output pixels, crops of `crop` pixels and `cells` tokens, `overlap`
    cells shared by neighbours, the lattice starting `margin` pixels before the raster.

    Positions are in the raster's output pixels (0 = its first pixel) and in lattice cells (cell i spans
    [i, i + 1)). Crop k covers cells [k * stride, k * stride + cells) and starts at the nearest whole pixel.
    """

    scene: int
    crop: int
    cells: int
    overlap: int
    margin: int

    def __post_init__(self) -> None:
        if min(self.scene, self.crop, self.cells) < 1 or not 0 <= self.overlap < self.cells:
            raise GAIRError(f"empty lattice or bad overlap: {self}")
        if self.margin < 1.5 * self.cell - 0.5:
            raise GAIRError(f"the lattice must start at least 1.5 cells before the raster: {self}")

    @property
    def cell(self) -> float:
        """Pixels per token cell."""
        return self.crop / self.cells

    @property
    def stride(self) -> int:
        """Cells between neighbouring crops."""
        return self.cells - self.overlap

    def position(self, pixels: np.ndarray) -> np.ndarray:
        """Lattice coordinates (cells, float64) of the centres of output pixels."""
        return (np.asarray(pixels, np.float64) + 0.5 + self.margin) / self.cell

    def cells_for(self, first: int, end: int) -> tuple[int, int]:
        """Cells [a, b) NILI reads for pixels [first, end): each pixel's four nearest cells and their neighbours."""
        lo, hi = self.position(np.array([first, end - 1]))
        return math.floor(lo - 0.5) - 1, math.floor(hi - 0.5) + 3

    @cached_property
    def end(self) -> int:
        """Cells the scene's pixels read: [0, end)."""
        return self.cells_for(0, self.scene)[1]

    @cached_property
    def count(self) -> int:
        """Crops along the axis: enough to give every cell the scene's pixels read a token."""
        return max(1, math.ceil((self.end - self.cells) / self.stride) + 1)

    def first_cell(self, k: int) -> int:
        """Lattice cell of crop k's first token: k * stride, the last crop pulled back to end with the lattice (so
        it never lies wholly past the raster and no crop is spent on mirrored scene only)."""
        return k * self.stride if k < self.count - 1 else max(0, self.end - self.cells)

    def crops_for(self, a: int, b: int) -> list[int]:
        """Crops covering any of cells [a, b)."""
        last = self.count - 1
        ks = [k for k in range(max(0, -((self.cells - 1 - a) // self.stride)), min(last, (b - 1) // self.stride + 1))]
        if self.first_cell(last) < b and self.first_cell(last) + self.cells > a and last not in ks:
            ks.append(last)
        return ks

    def start(self, k: int) -> int:
        """First output pixel of crop k (negative before the raster)."""
        return round(self.first_cell(k) * self.cell) - self.margin

    def shared(self, k: int) -> int:
        """Cells crops k and k + 1 share."""
        return max(0, self.first_cell(k) + self.cells - self.first_cell(k + 1))

    def weights(self, k: int) -> np.ndarray:
        """(cells,) blend weights of crop k's cells: sin^2 over the cells it shares with each neighbour (the two
        ramps of a shared stretch sum to one), flat at the lattice's ends."""
        return taper(self.cells, 0 if k == 0 else self.shared(k - 1), 0 if k == self.count - 1 else self.shared(k))


@dataclass(frozen=True)
class TokenLattice:
    """The crops of a raster (rows x cols axes) on its lattice of token cells; crop index = row-major."""

    rows: LatticeAxis
    cols: LatticeAxis

    @classmethod
    def for_scene(cls, height: int, width: int, crop_h: int, crop_w: int, cells: int, overlap: float,
                  margin_cells: float) -> TokenLattice:
        n = overlap_cells(overlap, cells)
        margin_h, margin_w = (math.ceil(margin_cells * side / cells) for side in (crop_h, crop_w))
        return cls(LatticeAxis(height, crop_h, cells, n, margin_h), LatticeAxis(width, crop_w, cells, n, margin_w))

    def __len__(self) -> int:
        return self.rows.count * self.cols.count

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.count, self.cols.count

    def origin(self, index: int) -> tuple[int, int]:
        """(row, col) output pixel where crop `index` starts (relative to the raster)."""
        r, c = divmod(index, self.cols.count)
        return self.rows.start(r), self.cols.start(c)

    def cell_origin(self, index: int) -> tuple[int, int]:
        """(row, col) lattice cell of crop `index`'s first token."""
        r, c = divmod(index, self.cols.count)
        return self.rows.first_cell(r), self.cols.first_cell(c)

    def cells_for(self, row0: int, row1: int, col0: int, col1: int) -> tuple[int, int, int, int]:
        """Cell rows [a, b) and columns [c, d) that pixels [row0, row1) x [col0, col1) read."""
        return (*self.rows.cells_for(row0, row1), *self.cols.cells_for(col0, col1))

    def crops_for(self, a: int, b: int, c: int, d: int) -> list[int]:
        """Crops covering any cell of rows [a, b) x columns [c, d), row-major."""
        n = self.cols.count
        return [r * n + k for r in self.rows.crops_for(a, b) for k in self.cols.crops_for(c, d)]

    def touching(self, row0: int, row1: int, col0: int, col1: int) -> list[int]:
        """Crops whose tokens pixels [row0, row1) x [col0, col1) depend on."""
        return self.crops_for(*self.cells_for(row0, row1, col0, col1))

    def weights(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Separable blend weights (rows (cells,), cols (cells,)) of crop `index`'s cells."""
        r, c = divmod(index, self.cols.count)
        return self.rows.weights(r), self.cols.weights(c)
