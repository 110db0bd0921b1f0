"""Querying the token grid in numpy (float32): the ONNX backend's mirror of engine/model/query.py, no torch.

The same lookup tables (engine/grid.py) drive both backends, so NILI, bilinear and bicubic give the same numbers
up to float32 rounding. NILI's `imnet` is linear, so a cell's 3x3 neighbourhood is projected once (nine (D x D)
matmuls over shifted copies of the grid instead of building the 9D-wide unfolded tensor), and the dense field
reduces to a column pass and one chunked matmul over rows, exactly as `dense_nili` does it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import (
    AREA_EPS,
    grid_coords,
    interp_axis,
    nili_axis,
    pixel_centres,
    taps_matrix,
)

# Above this many points per crop, projecting every cell once beats projecting the four corners of each point.
_PROJECT_CELLS_FACTOR = 0.25
# Rows of the dense field computed per matmul: about 8 MB of float32 output, so a chunk stays in cache.
_ROW_CHUNK_VALUES = 1 << 21


@dataclass(frozen=True)
class Imnet:
    """NILI's linear `imnet` split for the projected form: out = sum_k shift_k(grid) @ cell[k] + rel @ rel_w.T + b."""

    cell: np.ndarray   # (9, D, D_out) float32: the weight of neighbour k = 3*dy + dx, `F.unfold` order
    rel: np.ndarray    # (D_out, 2) float32: the weight of the (c0, c1) offset
    bias: np.ndarray   # (D_out,) float32

    @classmethod
    def from_linear(cls, weight: np.ndarray, bias: np.ndarray) -> "Imnet":
        """(D_out, 9D + 2) weight of `nn.Linear` whose inputs are channel-major unfolded features, then the offset."""
        weight = np.asarray(weight, dtype=np.float32)
        d_out, d_in = weight.shape
        d = (d_in - 2) // 9
        if d * 9 + 2 != d_in:
            raise ValueError(f"imnet weight must be (D_out, 9D + 2); got {weight.shape}")
        cell = weight[:, : 9 * d].reshape(d_out, d, 9).transpose(2, 1, 0)
        return cls(np.ascontiguousarray(cell), np.ascontiguousarray(weight[:, 9 * d:]), np.asarray(bias, np.float32))


def token_grid(tokens: np.ndarray) -> np.ndarray:
    """(B, G*G, D) row-major tokens -> (B, G, G, D)."""
    b, n, d = tokens.shape
    g = int(round(n**0.5))
    if g * g != n:
        raise ValueError(f"expected a square token grid, got {n} tokens")
    return tokens.reshape(b, g, g, d)


def _padded(tokens: np.ndarray) -> np.ndarray:
    return np.pad(token_grid(tokens), ((0, 0), (1, 1), (1, 1), (0, 0)))


def project_cells(tokens: np.ndarray, imnet: Imnet) -> np.ndarray:
    """imnet on every cell's zero-padded 3x3 neighbourhood, bias included: (B, G, G, D_out)."""
    padded = _padded(tokens)
    g = padded.shape[1] - 2
    out = np.broadcast_to(imnet.bias, (*padded.shape[:1], g, g, imnet.bias.shape[0])).copy()
    for k in range(9):
        dy, dx = divmod(k, 3)
        out += padded[:, dy:dy + g, dx:dx + g] @ imnet.cell[k]
    return out


def _project_at(padded: np.ndarray, rows: np.ndarray, cols: np.ndarray, imnet: Imnet) -> np.ndarray:
    """imnet on the neighbourhoods of the cells (rows, cols) (B, N) only, bias included: (B, N, D_out)."""
    batch = np.arange(padded.shape[0])[:, None]
    out = np.broadcast_to(imnet.bias, (*rows.shape, imnet.bias.shape[0])).copy()
    for k in range(9):
        dy, dx = divmod(k, 3)
        out += padded[batch, rows + dy, cols + dx] @ imnet.cell[k]
    return out


def _rows_cols(axis0: np.ndarray, axis1: np.ndarray, convention: str) -> tuple[np.ndarray, np.ndarray]:
    """Token (row, col) indices of a corner; c0 drives columns in the released convention, rows in legacy."""
    return (axis1, axis0) if convention == "released" else (axis0, axis1)


def nili_points(tokens: np.ndarray, rel_xy: np.ndarray, imnet: Imnet, convention: str = "released") -> np.ndarray:
    """NILI at N points per crop: (B, G*G, D), rel_xy (B, N, 2) -> (B, N, D_out) float32."""
    tokens = np.asarray(tokens, dtype=np.float32)
    b, n_tokens, _ = tokens.shape
    n_points = rel_xy.shape[1]
    padded = _padded(tokens)
    g = padded.shape[1] - 2
    cells = project_cells(tokens, imnet) if n_points > _PROJECT_CELLS_FACTOR * n_tokens else None
    c0, c1 = grid_coords(rel_xy, convention)
    ax0, ax1 = nili_axis(c0, g), nili_axis(c1, g)
    total = ax0.span * ax1.span + 4 * AREA_EPS
    batch = np.arange(b)[:, None]
    out = np.zeros((b, n_points, imnet.bias.shape[0]), dtype=np.float32)
    rel_mix = np.zeros((b, n_points, 2), dtype=np.float32)
    for v0 in range(2):
        for v1 in range(2):
            rows, cols = _rows_cols(ax0.index[v0], ax1.index[v1], convention)
            weight = ((ax0.area[v0] * ax1.area[v1] + AREA_EPS) / total).astype(np.float32)[..., None]
            corner = cells[batch, rows, cols] if cells is not None else _project_at(padded, rows, cols, imnet)
            out += corner * weight
            rel_mix += np.stack([ax0.rel[v0], ax1.rel[v1]], axis=-1).astype(np.float32) * weight
    return out + rel_mix @ imnet.rel.T


def interp_points(tokens: np.ndarray, rel_xy: np.ndarray, mode: str) -> np.ndarray:
    """`grid_sample` bilinear/bicubic of the token grid (zeros padding) at N points per crop -> (B, N, D)."""
    cells = token_grid(np.asarray(tokens, dtype=np.float32))
    b, g = cells.shape[0], cells.shape[1]
    cx, cy = grid_coords(rel_xy, "released")
    ix, wx = interp_axis(cx, g, mode)
    iy, wy = interp_axis(cy, g, mode)
    batch = np.arange(b)[:, None]
    out = np.zeros((b, rel_xy.shape[1], cells.shape[3]), dtype=np.float32)
    for a in range(iy.shape[0]):
        for c in range(ix.shape[0]):
            out += cells[batch, iy[a], ix[c]] * (wy[a] * wx[c]).astype(np.float32)[..., None]
    return out


def _row_pass(taps: np.ndarray, stacked: np.ndarray, height: int, width: int, finish) -> np.ndarray:
    """out[b, r] = finish(taps[r] @ stacked[b]) in row chunks that stay in cache."""
    b, k, _, d = stacked.shape
    out = np.empty((b, height, width, d), dtype=np.float32)
    flat = stacked.reshape(b, k, width * d)
    step = max(1, _ROW_CHUNK_VALUES // max(1, width * d))
    for r0 in range(0, height, step):
        r1 = min(height, r0 + step)
        out[:, r0:r1] = np.matmul(taps[r0:r1], flat).reshape(b, r1 - r0, width, d)
        finish(out[:, r0:r1], r0, r1)
    return out


def dense_nili(tokens: np.ndarray, height: int, width: int, imnet: Imnet, convention: str = "released") -> np.ndarray:
    """NILI at every pixel centre of an HxW grid over the crop: (B, H, W, D_out), equal to `nili_points` there."""
    cells = project_cells(np.asarray(tokens, dtype=np.float32), imnet)  # (B, G, G, D), rows x cols
    g = cells.shape[1]
    w_col_rel, w_row_rel = imnet.rel[:, 0], imnet.rel[:, 1]
    # c0 follows output columns and c1 output rows in both conventions; legacy reads the grid transposed.
    grid = cells if convention == "released" else cells.transpose(0, 2, 1, 3)
    c0, _ = grid_coords(np.stack([pixel_centres(width), np.zeros(width)], -1), convention)
    _, c1 = grid_coords(np.stack([np.zeros(height), pixel_centres(height)], -1), convention)
    col, row = nili_axis(c0, g), nili_axis(c1, g)
    f32 = np.float32
    # column pass: T_u = sum_v u (P + rel w0), T_1 = sum_v (P + rel w0); (W, G) @ (B, G, G, D) -> (B, G, W, D)
    area_cols = taps_matrix(col.index, col.area, g).astype(f32)
    unit_cols = taps_matrix(col.index, np.ones_like(col.area), g).astype(f32)
    t_u = area_cols @ grid + (col.area * col.rel).sum(0).astype(f32)[:, None] * w_col_rel
    t_1 = unit_cols @ grid + col.rel.sum(0).astype(f32)[:, None] * w_col_rel
    stacked = np.concatenate([t_u, t_1], axis=1)
    taps = np.concatenate([taps_matrix(row.index, row.area, g), AREA_EPS * taps_matrix(row.index, np.ones_like(row.area), g)], axis=1).astype(f32)
    # row-offset term and the normaliser, per pixel: (S_c * sum u rel + 2e sum rel) w1 and 1 / (S_r S_c + 4e)
    row_term = (np.outer((row.area * row.rel).sum(0), col.span) + 2 * AREA_EPS * row.rel.sum(0)[:, None]).astype(f32)
    inv_total = (1.0 / (np.outer(row.span, col.span) + 4 * AREA_EPS)).astype(f32)

    def finish(block: np.ndarray, r0: int, r1: int) -> None:
        block += row_term[r0:r1, :, None] * w_row_rel
        block *= inv_total[r0:r1, :, None]

    return _row_pass(taps, stacked, height, width, finish)


def dense_interp(tokens: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """Bilinear/bicubic `grid_sample` of the tokens at every pixel centre, separably: (B, H, W, D)."""
    cells = token_grid(np.asarray(tokens, dtype=np.float32))
    g = cells.shape[1]
    ix, wx = interp_axis(2 * pixel_centres(width) - 1, g, mode)
    iy, wy = interp_axis(2 * pixel_centres(height) - 1, g, mode)
    cols = taps_matrix(ix, wx, g).astype(np.float32) @ cells
    return _row_pass(taps_matrix(iy, wy, g).astype(np.float32), cols, height, width, lambda *_: None)
