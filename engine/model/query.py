"""Querying the token grid at points (torch): NILI, bilinear, bicubic, and the dense NILI field.

NILI (LIIF-style): each point takes the 3x3-unfolded features of its four nearest cells, appends its offset from each
cell centre, maps each through the linear `imnet`, and blends the four results with opposite-corner area weights.
Because `imnet` is linear, the dense field projects each cell once (P = imnet(unfold(tokens))) and reduces the blend
to two separable passes over the grid: a column pass (W x G taps) and one matmul over rows (H x 2G taps).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..runtime.grid import (
    AREA_EPS,
    grid_coords,
    interp_axis,
    nili_axis,
    pixel_centres,
    taps_matrix,
)


def token_grid(tokens: torch.Tensor) -> torch.Tensor:
    """(B, G*G, D) row-major tokens -> (B, D, G, G)."""
    b, n, d = tokens.shape
    g = int(round(n**0.5))
    if g * g != n:
        raise ValueError(f"expected a square token grid, got {n} tokens")
    return tokens.transpose(1, 2).reshape(b, d, g, g)


def unfold3x3(tokens: torch.Tensor) -> torch.Tensor:
    """(B, G*G, D) -> (B, G, G, 9D) zero-padded 3x3 neighbourhoods in `F.unfold` order (channel-major)."""
    grid = token_grid(tokens)
    b, d, g, _ = grid.shape
    return F.unfold(grid, 3, padding=1).view(b, d * 9, g, g).permute(0, 2, 3, 1)


def _as_tensor(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(device=like.device, dtype=like.dtype)


def _rows_cols(axis0: np.ndarray, axis1: np.ndarray, convention: str) -> tuple[np.ndarray, np.ndarray]:
    """Token (row, col) indices of a corner; c0 drives columns in the released convention, rows in legacy."""
    return (axis1, axis0) if convention == "released" else (axis0, axis1)


def nili_points(tokens: torch.Tensor, rel_xy: np.ndarray, imnet: torch.nn.Linear, convention: str = "released") -> torch.Tensor:
    """Reference-form NILI at N points per crop: (B, G*G, D), rel_xy (B, N, 2) -> (B, N, D).

    Evaluates `imnet` on the four (9D + 2)-vectors of every point, exactly as LIIF does; used for few points
    and in training, where gradients flow through tokens and `imnet`.
    """
    feat = unfold3x3(tokens)
    b, g = feat.shape[0], feat.shape[1]
    c0, c1 = grid_coords(rel_xy, convention)
    ax0, ax1 = nili_axis(c0, g), nili_axis(c1, g)
    total = _as_tensor(ax0.span * ax1.span + 4 * AREA_EPS, tokens)
    batch = torch.arange(b, device=tokens.device)[:, None]
    out = 0
    for v0 in range(2):
        for v1 in range(2):
            rows, cols = _rows_cols(ax0.index[v0], ax1.index[v1], convention)
            q = feat[batch, _as_tensor(rows, tokens).long(), _as_tensor(cols, tokens).long()]
            rel = _as_tensor(np.stack([ax0.rel[v0], ax1.rel[v1]], axis=-1), tokens)
            pred = imnet(torch.cat([q, rel], dim=-1))
            weight = _as_tensor(ax0.area[v0] * ax1.area[v1] + AREA_EPS, tokens) / total
            out = out + pred * weight[..., None]
    return out


def project_cells(tokens: torch.Tensor, imnet: torch.nn.Linear) -> torch.Tensor:
    """imnet applied once per cell to its unfolded features, bias included: (B, G, G, D) (a strided view).

    Computed as W (D x 9D) @ unfold (9D x G*G), which reads `F.unfold`'s output in place.
    """
    grid = token_grid(tokens)
    b, d, g, _ = grid.shape
    d9 = imnet.in_features - 2
    cols = torch.matmul(imnet.weight[:, :d9], F.unfold(grid, 3, padding=1)) + imnet.bias[:, None]
    return cols.view(b, -1, g, g).permute(0, 2, 3, 1)


def nili_points_projected(tokens: torch.Tensor, rel_xy: np.ndarray, imnet: torch.nn.Linear, convention: str = "released") -> torch.Tensor:
    """The same function as `nili_points`, cheaper for many points per crop (cells projected once)."""
    cells = project_cells(tokens, imnet)
    b, g = cells.shape[0], cells.shape[1]
    w_rel = imnet.weight[:, -2:]
    c0, c1 = grid_coords(rel_xy, convention)
    ax0, ax1 = nili_axis(c0, g), nili_axis(c1, g)
    total = _as_tensor(ax0.span * ax1.span + 4 * AREA_EPS, tokens)
    batch = torch.arange(b, device=tokens.device)[:, None]
    out, rel_mix = 0, 0
    for v0 in range(2):
        for v1 in range(2):
            rows, cols = _rows_cols(ax0.index[v0], ax1.index[v1], convention)
            weight = _as_tensor(ax0.area[v0] * ax1.area[v1] + AREA_EPS, tokens) / total
            out = out + cells[batch, _as_tensor(rows, tokens).long(), _as_tensor(cols, tokens).long()] * weight[..., None]
            rel_mix = rel_mix + _as_tensor(np.stack([ax0.rel[v0], ax1.rel[v1]], axis=-1), tokens) * weight[..., None]
    return out + rel_mix @ w_rel.T


def interp_points(tokens: torch.Tensor, rel_xy: np.ndarray, mode: str) -> torch.Tensor:
    """`grid_sample` bilinear/bicubic of the token grid (zeros padding) at N points per crop -> (B, N, D)."""
    grid = token_grid(tokens)
    b, d, g, _ = grid.shape
    cx, cy = grid_coords(rel_xy, "released")
    ix, wx = interp_axis(cx, g, mode)
    iy, wy = interp_axis(cy, g, mode)
    batch = torch.arange(b, device=tokens.device)[:, None]
    cells = grid.permute(0, 2, 3, 1)
    out = 0
    for a in range(iy.shape[0]):
        for c in range(ix.shape[0]):
            weight = _as_tensor(wy[a] * wx[c], tokens)
            out = out + cells[batch, _as_tensor(iy[a], tokens).long(), _as_tensor(ix[c], tokens).long()] * weight[..., None]
    return out


def _row_pass(taps: torch.Tensor, stacked: torch.Tensor, height: int, width: int, scale: torch.Tensor | None) -> torch.Tensor:
    """out[b, r] = (taps[r] @ stacked[b]) * scale[r], in blocks of 64 rows (smaller blocks starve the GEMM)."""
    b, k, _, d = stacked.shape
    out = torch.empty(b, height, width, d, dtype=stacked.dtype, device=stacked.device)
    flat = stacked.reshape(b, k, width * d)
    step = 64
    for r0 in range(0, height, step):
        r1 = min(height, r0 + step)
        torch.matmul(taps[r0:r1], flat, out=out[:, r0:r1].view(b, r1 - r0, width * d))
        if scale is not None:
            out[:, r0:r1].mul_(scale[r0:r1, :, None])
    return out


def dense_nili(tokens: torch.Tensor, height: int, width: int, imnet: torch.nn.Linear, convention: str = "released") -> torch.Tensor:
    """NILI at every pixel centre of an HxW grid over the crop: (B, H, W, D), equal to `nili_points` there.

    With u the opposite-corner area factors, S their sums and e = AREA_EPS, a pixel's value is
    [sum_rows (u_r T_u + e T_1) + (a_r S_c + 2e b_r) w_row] / (S_r S_c + 4e), where the column pass gives
    T_u = sum_cols u_c (P + rel_c w_col), T_1 = sum_cols (P + rel_c w_col), a_r = sum u_r rel_r, b_r = sum rel_r.
    Appending w_col as an extra grid column and w_row as an extra grid row turns all of it into two matmuls
    ((W x G+1) per grid row, then (H x 2G+2) over rows) and one scaling pass.
    """
    cells = project_cells(tokens, imnet)  # (B, G, G, D), bias included (the blend weights sum to one)
    b, g, _, d = cells.shape
    w_col_rel, w_row_rel = imnet.weight[:, -2], imnet.weight[:, -1]
    aug = cells.new_zeros(b, g + 1, g + 1, d)
    # c0 follows output columns and c1 output rows in both conventions; legacy reads the grid transposed.
    aug[:, :g, :g] = cells if convention == "released" else cells.transpose(1, 2)
    aug[:, :g, g] = w_col_rel
    aug[:, g, :g] = w_row_rel
    c0, _ = grid_coords(np.stack([pixel_centres(width), np.zeros(width)], -1), convention)
    _, c1 = grid_coords(np.stack([np.zeros(height), pixel_centres(height)], -1), convention)
    col, row = nili_axis(c0, g), nili_axis(c1, g)
    ones = np.ones_like(col.area)
    col_taps = np.stack([
        np.hstack([taps_matrix(col.index, col.area, g), (col.area * col.rel).sum(0)[:, None]]),
        np.hstack([taps_matrix(col.index, ones, g), col.rel.sum(0)[:, None]]),
    ])
    stacked = torch.matmul(_as_tensor(col_taps, cells)[None, :, None], aug[:, None])  # (B, 2, G+1, W, D)
    row_taps = np.hstack([taps_matrix(row.index, row.area, g), (row.area * row.rel).sum(0)[:, None],
                          AREA_EPS * taps_matrix(row.index, np.ones_like(row.area), g),
                          AREA_EPS * row.rel.sum(0)[:, None]])
    inv_total = _as_tensor(1.0 / (np.outer(row.span, col.span) + 4 * AREA_EPS), cells)
    return _row_pass(_as_tensor(row_taps, cells), stacked.flatten(1, 2), height, width, inv_total)


def dense_interp(tokens: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    """Bilinear/bicubic `grid_sample` of the tokens at every pixel centre, separably: (B, H, W, D)."""
    cells = token_grid(tokens).permute(0, 2, 3, 1)
    g = cells.shape[1]
    ix, wx = interp_axis(2 * pixel_centres(width) - 1, g, mode)
    iy, wy = interp_axis(2 * pixel_centres(height) - 1, g, mode)
    cols = torch.matmul(_as_tensor(taps_matrix(ix, wx, g), cells), cells)
    return _row_pass(_as_tensor(taps_matrix(iy, wy, g), cells), cols, height, width, None)
