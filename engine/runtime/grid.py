"""Per-axis lookup tables for querying a GxG token grid (numpy only, shared by the torch and ONNX backends).

A query point has two grid coordinates (c0, c1) in the [-1, 1] frame of `F.grid_sample` (align_corners=False).
Every query mode here is separable: a point's value is a sum over a few token rows times a few token columns, so
each axis reduces to (index, weight) taps computed once per coordinate value.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS_SHIFT = 1e-6   # LIIF's shift that breaks ties between neighbouring cells
CLAMP = 1 - 1e-6   # LIIF clamps shifted coordinates just inside the grid
AREA_EPS = 1e-9    # LIIF adds this to every corner area
CUBIC_A = -0.75    # PyTorch's bicubic convolution constant


def grid_coords(rel_xy: np.ndarray, convention: str = "released") -> tuple[np.ndarray, np.ndarray]:
    """Relative positions (x from west, y from north, 0..1) -> NILI grid coordinates (c0, c1).

    released: c0 = 2x-1 drives token columns, c1 = 2y-1 drives token rows (the released inference code).
    legacy: c0 = x drives token rows and c1 = y token columns (the training-era code fed [0, 1] positions to
    LIIF's row/column order); kept so embeddings of weights trained that way can be reproduced.
    """
    rel_xy = np.asarray(rel_xy, dtype=np.float64)
    x, y = rel_xy[..., 0], rel_xy[..., 1]
    if convention == "released":
        return 2 * x - 1, 2 * y - 1
    if convention == "legacy":
        return x, y
    raise ValueError(f"unknown NILI convention {convention!r}; use 'released' or 'legacy'")


@dataclass(frozen=True)
class NiliAxis:
    """The two LIIF corners along one axis: token index, relative offset (in LIIF units) and area factor."""

    index: np.ndarray  # (2, n) int64, corner shifted by -1 then +1 half-cell
    rel: np.ndarray    # (2, n) float64, (c - cell centre) * G
    area: np.ndarray   # (2, n) float64, |rel| of the OPPOSITE corner (LIIF's diagonal area swap)

    @property
    def span(self) -> np.ndarray:
        return self.area.sum(axis=0)


def cell_centres(index: np.ndarray, grid: int) -> np.ndarray:
    """Centres of cells in [-1, 1], rounded as LIIF's `make_coord` makes them (float32): part of the function."""
    step = np.float32(2.0 / grid)
    return (np.float32(-1 + 1 / grid) + step * np.asarray(index).astype(np.float32)).astype(np.float64)


def nili_axis(c: np.ndarray, grid: int) -> NiliAxis:
    c = np.asarray(c, dtype=np.float64)
    idx, rel = [], []
    for v in (-1.0, 1.0):
        shifted = np.clip(c + v / grid + EPS_SHIFT, -CLAMP, CLAMP)
        i = np.clip(np.rint(((shifted + 1) * grid - 1) / 2), 0, grid - 1).astype(np.int64)
        idx.append(i)
        rel.append((c - cell_centres(i, grid)) * grid)
    rel_arr = np.stack(rel)
    return NiliAxis(np.stack(idx), rel_arr, np.abs(rel_arr[::-1]))


def interp_axis(c: np.ndarray, grid: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """`grid_sample` taps (zeros padding, align_corners=False): index (k, n) int64, weight (k, n) float64."""
    ix = ((np.asarray(c, dtype=np.float64) + 1) * grid - 1) / 2
    i0 = np.floor(ix)
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
        raise ValueError(f"unknown interpolation mode {mode!r}")
    index = np.stack([i0 + o for o in offsets])
    weight = np.stack(weights) * ((index >= 0) & (index <= grid - 1))
    return np.clip(index, 0, grid - 1).astype(np.int64), weight


def taps_matrix(index: np.ndarray, weight: np.ndarray, grid: int) -> np.ndarray:
    """Scatter per-point taps into a dense (n, grid) matrix (repeated indices add up)."""
    n = index.shape[1]
    out = np.zeros((n, grid), dtype=np.float64)
    rows = np.broadcast_to(np.arange(n), index.shape)
    np.add.at(out, (rows.ravel(), index.ravel()), np.broadcast_to(weight, index.shape).ravel())
    return out


def pixel_centres(n: int) -> np.ndarray:
    """Relative positions (0..1) of the centres of n pixels across a crop."""
    return (np.arange(n, dtype=np.float64) + 0.5) / n


def relative_positions(lonlat: np.ndarray, bbox: np.ndarray) -> np.ndarray:
    """[lon, lat] points inside bbox [lon_min, lat_max, lon_max, lat_min] -> (x from west, y from north), float64.

    Done in float64: in float32, raw degrees over a 0.02-degree crop lose ~1e-3 of the position.
    """
    lonlat = np.asarray(lonlat, dtype=np.float64)
    bbox = np.asarray(bbox, dtype=np.float64)[:, None, :]
    x = (lonlat[..., 0] - bbox[..., 0]) / (bbox[..., 2] - bbox[..., 0])
    y = (bbox[..., 1] - lonlat[..., 1]) / (bbox[..., 1] - bbox[..., 3])
    return np.stack([x, y], axis=-1)
