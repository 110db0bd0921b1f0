"""Querying the token grid (torch): the reference NILI point query and the one kernel behind every other query.

NILI (LIIF-style): each point takes the 3x3-unfolded features of its four nearest cells, appends its offset from each
cell centre, maps each through the linear `imnet`, and blends the four results with opposite-corner area weights.
`nili_points` does exactly that (training, and the golden test). Because `imnet` is linear, everything else projects
each cell once (P = imnet(unfold(tokens)), bias included) and samples a grid with separable taps
(engine.runtime.grid.FieldPlan): `sample_points` at arbitrary positions, `sample_dense` on the pixel-centre grid
(two matmuls: a column pass, then one over rows). Bilinear and bicubic sample the token grid with the same kernel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import GAIRError
from ..runtime.grid import AREA_EPS, FieldPlan, grid_coords, nili_axis, taps_matrix

ROW_BLOCK = 64  # rows of the dense field per output matmul: smaller blocks starve the GEMM


def token_grid(tokens: torch.Tensor) -> torch.Tensor:
    """(B, G*G, D) row-major tokens -> (B, D, G, G)."""
    b, n, d = tokens.shape
    g = int(round(n**0.5))
    if g * g != n:
        raise GAIRError(f"tokens must form a square grid (B, G*G, D); got {n} tokens per crop")
    return tokens.transpose(1, 2).reshape(b, d, g, g)


def unfold3x3(tokens: torch.Tensor) -> torch.Tensor:
    """(B, G*G, D) -> (B, G, G, 9D) zero-padded 3x3 neighbourhoods in `F.unfold` order (channel-major)."""
    grid = token_grid(tokens)
    b, d, g, _ = grid.shape
    return F.unfold(grid, 3, padding=1).view(b, d * 9, g, g).permute(0, 2, 3, 1)


def nili_points(tokens: torch.Tensor, rel_xy: torch.Tensor, imnet: torch.nn.Linear,
                convention: str = "released") -> torch.Tensor:
    """Reference-form NILI at N points per crop: (B, G*G, D), rel_xy (B, N, 2) float64 -> (B, N, D).

    Evaluates `imnet` on the four (9D + 2)-vectors of every point, exactly as LIIF does; used for few points
    and in training, where gradients flow through tokens and `imnet`.
    """
    feat = unfold3x3(tokens)
    b, g = feat.shape[0], feat.shape[1]
    c0, c1 = grid_coords(rel_xy[..., 0], rel_xy[..., 1], convention)
    ax0, ax1 = nili_axis(c0, g), nili_axis(c1, g)
    total = ax0.span * ax1.span + 4 * AREA_EPS
    batch = torch.arange(b, device=tokens.device)[:, None]
    out = 0
    for v0 in range(2):
        for v1 in range(2):
            rows, cols = (ax1.index[v1], ax0.index[v0]) if convention == "released" else (ax0.index[v0], ax1.index[v1])
            rel = torch.stack([ax0.rel[v0], ax1.rel[v1]], dim=-1).to(tokens.dtype)
            pred = imnet(torch.cat([feat[batch, rows, cols], rel], dim=-1))
            weight = (ax0.area[v0] * ax1.area[v1] + AREA_EPS).to(tokens.dtype) / total.to(tokens.dtype)
            out = out + pred * weight[..., None]
    return out


def project_cells(tokens: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """imnet (weight (K, 9D + 2), bias (K,)) applied once per cell to its unfolded features: (B, G, G, K) view.

    Computed as W (K x 9D) @ unfold (9D x G*G), which reads `F.unfold`'s output in place.
    """
    grid = token_grid(tokens)
    b, _, g, _ = grid.shape
    cols = torch.matmul(weight[:, :-2], F.unfold(grid, 3, padding=1)) + bias[:, None]
    return cols.view(b, -1, g, g).permute(0, 2, 3, 1)


def nili_grid(tokens: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, convention: str) -> torch.Tensor:
    """The grid NILI reads: projected cells, an extra column (c0's offset weight) and row (c1's): (B, G+1, G+1, K).

    The legacy convention reads the cells transposed, so that grid rows always follow c1 (see grid.field_plan).
    """
    cells = project_cells(tokens, weight, bias)
    b, g, _, k = cells.shape
    aug = cells.new_zeros(b, g + 1, g + 1, k)
    aug[:, :g, :g] = cells if convention == "released" else cells.transpose(1, 2)
    aug[:, :g, g] = weight[:, -2]
    aug[:, g, :g] = weight[:, -1]
    return aug


def cell_grid(tokens: torch.Tensor) -> torch.Tensor:
    """The grid bilinear/bicubic taps read: the tokens as (B, G, G, D)."""
    return token_grid(tokens).permute(0, 2, 3, 1)


def _pair_weights(plan: FieldPlan, a: int, c: int) -> torch.Tensor:
    """Weight of grid entry (rows.index[a], cols.index[c]) at each point: the terms summed, normalised (float64)."""
    weight = (plan.rows.weight[:, a] * plan.cols.weight[:, c]).sum(0)
    if plan.normalised:
        weight = weight / (plan.rows.mass * plan.cols.mass).sum(0)
    return weight


def sample_points(grid: torch.Tensor, plan: FieldPlan) -> torch.Tensor:
    """(B, R, C, K) grid at a points plan of (B, N) positions -> (B, N, K)."""
    batch = torch.arange(grid.shape[0], device=grid.device)[:, None]
    out = 0
    for a in range(plan.rows.index.shape[0]):
        for c in range(plan.cols.index.shape[0]):
            weight = _pair_weights(plan, a, c).to(grid.dtype)
            out = out + grid[batch, plan.rows.index[a], plan.cols.index[c]] * weight[..., None]
    return out


def sample_dense(grid: torch.Tensor, plan: FieldPlan) -> torch.Tensor:
    """(B, R, C, K) grid at a dense plan (H rows, W columns) -> (B, H, W, K): two separable matmuls per term."""
    b, r, c, k = grid.shape
    rows, cols = plan.rows, plan.cols
    height, width = rows.index.shape[1], cols.index.shape[1]
    col_taps = torch.stack([taps_matrix(cols.index, w, c) for w in cols.weight]).to(grid.dtype)      # (T, W, C)
    row_taps = torch.cat([taps_matrix(rows.index, w, r) for w in rows.weight], dim=1).to(grid.dtype)  # (H, T*R)
    stacked = torch.matmul(col_taps[None, :, None], grid[:, None]).flatten(1, 2)  # (B, T*R, W, K)
    scale = (rows.mass.T @ cols.mass).reciprocal().to(grid.dtype) if plan.normalised else None  # (H, W)
    flat = stacked.reshape(b, -1, width * k)
    if torch.is_grad_enabled() and grid.requires_grad:  # autograd: no in-place blocks
        out = torch.matmul(row_taps, flat).view(b, height, width, k)
        return out * scale[..., None] if scale is not None else out
    out = torch.empty(b, height, width, k, dtype=grid.dtype, device=grid.device)
    for r0 in range(0, height, ROW_BLOCK):
        r1 = min(height, r0 + ROW_BLOCK)
        torch.matmul(row_taps[r0:r1], flat, out=out[:, r0:r1].view(b, r1 - r0, width * k))
        if scale is not None:
            out[:, r0:r1].mul_(scale[r0:r1, :, None])
    return out
