"""Taps for querying a GxG token grid, for numpy arrays and torch tensors alike (without importing torch).

A query point has two grid coordinates (c0, c1) in the [-1, 1] frame of `F.grid_sample` (align_corners=False).
Every query mode here is separable: a point's value is a sum over a few grid rows times a few grid columns, so each
axis reduces to taps (index, weight) computed once per coordinate value. A `FieldPlan` holds the row and column taps
of a set of points, or of the pixel-centre grid of a dense field; the backends' kernels (engine.model.query for torch,
engine.runtime.field for numpy) evaluate a plan on a grid with the same algebra either way. Taps are float64 and
live on the device of the positions they were built from: a torch point query never leaves its device.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import NILI_CONVENTIONS
from ..errors import GAIRError

EPS_SHIFT = 1e-6   # LIIF's shift that breaks ties between neighbouring cells
CLAMP = 1 - 1e-6   # LIIF clamps shifted coordinates just inside the grid
AREA_EPS = 1e-9    # LIIF adds this to every corner area
CUBIC_A = -0.75    # PyTorch's bicubic convolution constant
INTERP_MODES = ("bilinear", "bicubic")

Array = Any  # np.ndarray or torch.Tensor: every helper returns the kind (and device) it was given


def _torch_of(a: Array):
    """The torch module when `a` is a tensor, else None (torch is never imported from here)."""
    return sys.modules["torch"] if type(a).__module__.startswith("torch") else None


def as_float64(a: Array) -> Array:
    """Positions in float64 (tensors stay on their device; numpy-likes become numpy)."""
    torch = _torch_of(a)
    return a.to(torch.float64) if torch is not None else np.asarray(a, dtype=np.float64)


def _long(a: Array) -> Array:
    return a.long() if _torch_of(a) is not None else a.astype(np.int64)


def _arange(n: int, like: Array) -> Array:
    torch = _torch_of(like)
    if torch is not None:
        return torch.arange(n, dtype=torch.float64, device=like.device)
    return np.arange(n, dtype=np.float64)


def _xp(a: Array):
    return _torch_of(a) or np


def grid_coords(x: Array, y: Array, convention: str = "released") -> tuple[Array, Array]:
    """Relative positions (x from west, y from north, 0..1) -> NILI grid coordinates (c0, c1).

    released: c0 = 2x-1 drives token columns, c1 = 2y-1 drives token rows (the released inference code).
    legacy: c0 = x drives token rows and c1 = y token columns (the training-era code fed [0, 1] positions to
    LIIF's row/column order); kept so embeddings of weights trained that way can be reproduced.
    """
    if convention == "released":
        return 2 * x - 1, 2 * y - 1
    if convention == "legacy":
        return x, y
    raise GAIRError(f"unknown NILI convention {convention!r}; use one of {', '.join(NILI_CONVENTIONS)}")


def cell_centres(index: Array, grid: int) -> Array:
    """Centres of cells in [-1, 1], rounded as LIIF's `make_coord` makes them (float32): part of the function.

    The float32 constants go in as Python scalars, which torch applies in float32 (no host-to-device copy).
    """
    first, step = np.float32(-1 + 1 / grid), np.float32(2.0 / grid)
    if _torch_of(index) is not None:
        return (index.float() * float(step) + float(first)).double()
    return (first + step * np.asarray(index).astype(np.float32)).astype(np.float64)


@dataclass(frozen=True)
class NiliAxis:
    """The two LIIF corners along one axis: token index, relative offset (in LIIF units) and area factor."""

    index: Array  # (2, ...) int64, corner shifted by -1 then +1 half-cell
    rel: Array    # (2, ...) float64, (c - cell centre) * G
    area: Array   # (2, ...) float64, |rel| of the OPPOSITE corner (LIIF's diagonal area swap)

    @property
    def span(self) -> Array:
        return self.area.sum(0)


def nili_axis(c: Array, grid: int) -> NiliAxis:
    c = as_float64(c)
    xp = _xp(c)
    idx, rel = [], []
    for v in (-1.0, 1.0):
        shifted = xp.clip(c + v / grid + EPS_SHIFT, -CLAMP, CLAMP)
        i = _long(xp.clip(xp.round(((shifted + 1) * grid - 1) / 2), 0, grid - 1))
        idx.append(i)
        rel.append((c - cell_centres(i, grid)) * grid)
    return NiliAxis(xp.stack(idx), xp.stack(rel), xp.stack([xp.abs(rel[1]), xp.abs(rel[0])]))


@dataclass(frozen=True)
class AxisTaps:
    """Taps of one axis at n positions: term t of the value reads grid entry index[k] with weight weight[t, k]."""

    index: Array   # (k, ...) int64 grid index
    weight: Array  # (t, k, ...) float64, one set of weights per separable term
    mass: Array | None = None  # (t, ...) the weight each term puts on real cells, when the plan normalises


@dataclass(frozen=True)
class FieldPlan:
    """value = sum_t rows_t (x) cols_t over the grid, divided by sum_t mass_rows_t * mass_cols_t when normalised."""

    rows: AxisTaps
    cols: AxisTaps

    @property
    def normalised(self) -> bool:
        return self.rows.mass is not None


def nili_taps(c: Array, grid: int, eps: float) -> AxisTaps:
    """NILI taps of one axis on the augmented grid (index `grid` is the extra row/column holding imnet's offset weight).

    With u the opposite-corner areas and e = AREA_EPS, LIIF's corner weight u_r u_c + e is two separable terms:
    (u_r, u_c) and (e, 1); the offsets enter through the extra index as sum u rel (first term) and e sum rel.
    Rows take eps = AREA_EPS and columns eps = 1, so that the second term's product is e.
    """
    ax = nili_axis(c, grid)
    xp = _xp(ax.rel)
    ones = xp.ones_like(ax.rel[0])
    index = xp.stack([ax.index[0], ax.index[1], xp.full_like(ax.index[0], grid)])
    area_term = xp.stack([ax.area[0], ax.area[1], (ax.area * ax.rel).sum(0)])
    eps_term = eps * xp.stack([ones, ones, ax.rel.sum(0)])
    return AxisTaps(index, xp.stack([area_term, eps_term]), xp.stack([ax.span, 2 * eps * ones]))


def interp_taps(c: Array, grid: int, mode: str) -> AxisTaps:
    """`grid_sample` taps (zeros padding, align_corners=False) of one axis: one term, 2 (bilinear) or 4 (bicubic)."""
    ix = ((as_float64(c) + 1) * grid - 1) / 2
    xp = _xp(ix)
    i0 = xp.floor(ix)
    t = ix - i0
    if mode == "bilinear":
        offsets, weights = (0, 1), [1 - t, t]
    elif mode == "bicubic":
        a = CUBIC_A

        def near(d):  # |d| <= 1
            return ((a + 2) * d - (a + 3)) * d * d + 1

        def far(d):   # 1 < |d| < 2
            return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        offsets, weights = (-1, 0, 1, 2), [far(t + 1), near(t), near(1 - t), far(2 - t)]
    else:
        raise GAIRError(f"unknown interpolation mode {mode!r}; use one of {', '.join(INTERP_MODES)}")
    index = xp.stack([i0 + o for o in offsets])
    weight = xp.stack(weights) * ((index >= 0) & (index <= grid - 1))
    return AxisTaps(_long(xp.clip(index, 0, grid - 1)), weight[None])


def _plan(rows_c: Array, cols_c: Array, n_rows: int, n_cols: int, mode: str) -> FieldPlan:
    """Taps of rows at grid coordinates rows_c over n_rows cells and columns at cols_c over n_cols."""
    if mode == "nili":
        return FieldPlan(rows=nili_taps(rows_c, n_rows, AREA_EPS), cols=nili_taps(cols_c, n_cols, 1.0))
    if mode in INTERP_MODES:
        return FieldPlan(rows=interp_taps(rows_c, n_rows, mode), cols=interp_taps(cols_c, n_cols, mode))
    raise GAIRError(f"unknown query mode {mode!r}; use nili, {', '.join(INTERP_MODES)} (or transformer on torch)")


def field_plan(x: Array, y: Array, grid: int, mode: str, convention: str = "released") -> FieldPlan:
    """Taps of NILI or bilinear/bicubic at relative positions x (from west) and y (from north), 0..1.

    Rows follow y and columns x. For NILI the backends sample the augmented grid of projected cells, transposed in
    the legacy convention (where c0 = x drives token rows), so that c1 always drives grid rows here.
    """
    if mode == "nili":
        c0, c1 = grid_coords(as_float64(x), as_float64(y), convention)
        return _plan(c1, c0, grid, grid, mode)
    return _plan(2 * as_float64(y) - 1, 2 * as_float64(x) - 1, grid, grid, mode)


def lattice_plan(rows_u: Array, cols_u: Array, n_rows: int, n_cols: int, mode: str) -> FieldPlan:
    """Taps of pixel centres on a block of an R x C lattice of token cells (engine.pipeline.tiling): positions in
    cells from the block's first cell (cell i spans [i, i + 1)), released convention; a crop is the 12 x 12 case."""
    return _plan(2 * as_float64(rows_u) / n_rows - 1, 2 * as_float64(cols_u) / n_cols - 1, n_rows, n_cols, mode)


def points_plan(rel_xy: Array, grid: int, mode: str, convention: str = "released") -> FieldPlan:
    """The plan of N points per crop: rel_xy (B, N, 2), x from west and y from north in 0..1."""
    return field_plan(rel_xy[..., 0], rel_xy[..., 1], grid, mode, convention)


def dense_plan(height: int, width: int, grid: int, mode: str, convention: str = "released",
               like: Array | None = None) -> FieldPlan:
    """The plan of the pixel centres of a height x width grid over the crop (taps on the device of `like`)."""
    like = np.zeros(0) if like is None else like
    return field_plan(pixel_centres(width, like), pixel_centres(height, like), grid, mode, convention)


def taps_matrix(index: Array, weight: Array, grid: int) -> Array:
    """Per-position taps (k, n) as a dense (n, grid) matrix (repeated indices add up)."""
    onehot = index[..., None] == _long(_arange(grid, index))
    return (onehot * weight[..., None]).sum(0)


def pixel_centres(n: int, like: Array | None = None) -> Array:
    """Relative positions (0..1) of the centres of n pixels across a crop (float64, on the device of `like`)."""
    return (_arange(n, np.zeros(0) if like is None else like) + 0.5) / n


def relative_positions(lonlat: np.ndarray, bbox: np.ndarray) -> np.ndarray:
    """[lon, lat] points inside bbox [lon_min, lat_max, lon_max, lat_min] -> (x from west, y from north), float64.

    Done in float64: in float32, raw degrees over a 0.02-degree crop lose ~1e-3 of the position.
    """
    lonlat = np.asarray(lonlat, dtype=np.float64)
    bbox = np.asarray(bbox, dtype=np.float64)[:, None, :]
    x = (lonlat[..., 0] - bbox[..., 0]) / (bbox[..., 2] - bbox[..., 0])
    y = (bbox[..., 1] - lonlat[..., 1]) / (bbox[..., 1] - bbox[..., 3])
    return np.stack([x, y], axis=-1)
