"""Querying the token grid in numpy (float32): the ONNX backend's mirror of engine/model/query.py, no torch.

The same plans (engine.runtime.grid.FieldPlan) drive both backends, so NILI, bilinear and bicubic give the same numbers
up to float32 rounding. NILI's `imnet` is linear, so a cell's 3x3 neighbourhood is projected once (nine (D x K)
matmuls over shifted copies of the grid instead of building the 9D-wide unfolded tensor); points and dense fields
then sample that grid with one kernel each, as the torch backend does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import GAIRError
from .grid import FieldPlan, taps_matrix

# Rows of the dense field computed per matmul: about 8 MB of float32 output, so a chunk stays in cache.
_ROW_CHUNK_VALUES = 1 << 21


@dataclass(frozen=True)
class Imnet:
    """NILI's linear `imnet` split for the projected form: out = sum_k shift_k(grid) @ cell[k] + rel @ rel_w.T + b."""

    cell: np.ndarray   # (9, D, K) float32: the weight of neighbour k = 3*dy + dx, `F.unfold` order
    rel: np.ndarray    # (K, 2) float32: the weight of the (c0, c1) offset
    bias: np.ndarray   # (K,) float32

    @classmethod
    def from_linear(cls, weight: np.ndarray, bias: np.ndarray) -> Imnet:
        """(K, 9D + 2) weight of `nn.Linear` whose inputs are channel-major unfolded features, then the offset."""
        weight = np.asarray(weight, dtype=np.float32)
        d_out, d_in = weight.shape
        d = (d_in - 2) // 9
        if d * 9 + 2 != d_in:
            raise GAIRError(f"imnet weight must be (K, 9D + 2); got {weight.shape}: the export's query.npz is damaged")
        cell = weight[:, : 9 * d].reshape(d_out, d, 9).transpose(2, 1, 0)
        return cls(np.ascontiguousarray(cell), np.ascontiguousarray(weight[:, 9 * d:]), np.asarray(bias, np.float32))

    def projected(self, components: np.ndarray, shift: np.ndarray) -> Imnet:
        """imnet followed by x -> components @ x - shift (a PCA): exact, as the NILI blend weights sum to one."""
        comps = np.asarray(components, dtype=np.float32)
        return Imnet(np.ascontiguousarray(self.cell @ comps.T), np.ascontiguousarray(comps @ self.rel),
                     (comps @ self.bias - np.asarray(shift, np.float32)).astype(np.float32))


def token_grid(tokens: np.ndarray) -> np.ndarray:
    """(B, G*G, D) row-major tokens -> (B, G, G, D)."""
    b, n, d = tokens.shape
    g = int(round(n**0.5))
    if g * g != n:
        raise GAIRError(f"tokens must form a square grid (B, G*G, D); got {n} tokens per crop")
    return tokens.reshape(b, g, g, d)


def project_ringed(ringed: np.ndarray, imnet: Imnet) -> np.ndarray:
    """imnet on the 3x3 neighbourhood of every cell of (B, R+2, C+2, D) cells that carry a ring of neighbours (zeros
    for one crop, the lattice's own cells for a raster block), bias included: (B, R, C, K)."""
    r, c = ringed.shape[1] - 2, ringed.shape[2] - 2
    out = np.broadcast_to(imnet.bias, (ringed.shape[0], r, c, imnet.bias.shape[0])).copy()
    for k in range(9):
        dy, dx = divmod(k, 3)
        out += ringed[:, dy:dy + r, dx:dx + c] @ imnet.cell[k]
    return out


def project_cells(tokens: np.ndarray, imnet: Imnet) -> np.ndarray:
    """imnet on every cell's zero-padded 3x3 neighbourhood, bias included: (B, G, G, K)."""
    return project_ringed(np.pad(token_grid(tokens), ((0, 0), (1, 1), (1, 1), (0, 0))), imnet)


def augment(cells: np.ndarray, imnet: Imnet) -> np.ndarray:
    """(B, R, C, K) projected cells plus an extra column (c0's offset weight) and row (c1's): (B, R+1, C+1, K)."""
    b, r, c, k = cells.shape
    aug = np.zeros((b, r + 1, c + 1, k), dtype=np.float32)
    aug[:, :r, :c] = cells
    aug[:, :r, c] = imnet.rel[:, 0]
    aug[:, r, :c] = imnet.rel[:, 1]
    return aug


def nili_grid(tokens: np.ndarray, imnet: Imnet, convention: str) -> np.ndarray:
    """Projected cells plus an extra column (c0's offset weight) and row (c1's): (B, G+1, G+1, K), as torch's."""
    cells = project_cells(np.asarray(tokens, dtype=np.float32), imnet)
    return augment(cells if convention == "released" else cells.transpose(0, 2, 1, 3), imnet)


def cell_grid(tokens: np.ndarray) -> np.ndarray:
    """The grid bilinear/bicubic taps read: the tokens as (B, G, G, D) float32."""
    return token_grid(np.asarray(tokens, dtype=np.float32))


def sample_points(grid: np.ndarray, plan: FieldPlan) -> np.ndarray:
    """(B, R, C, K) grid at a points plan of (B, N) positions -> (B, N, K) float32."""
    batch = np.arange(grid.shape[0])[:, None]
    total = (plan.rows.mass * plan.cols.mass).sum(0) if plan.normalised else 1.0
    out = np.zeros((*plan.rows.index.shape[1:], grid.shape[-1]), dtype=np.float32)
    for a in range(plan.rows.index.shape[0]):
        for c in range(plan.cols.index.shape[0]):
            weight = ((plan.rows.weight[:, a] * plan.cols.weight[:, c]).sum(0) / total).astype(np.float32)
            out += grid[batch, plan.rows.index[a], plan.cols.index[c]] * weight[..., None]
    return out


def sample_dense(grid: np.ndarray, plan: FieldPlan) -> np.ndarray:
    """(B, R, C, K) grid at a dense plan (H rows, W columns) -> (B, H, W, K): two separable matmuls per term."""
    b, r, c, k = grid.shape
    rows, cols = plan.rows, plan.cols
    height, width = rows.index.shape[1], cols.index.shape[1]
    col_taps = np.stack([taps_matrix(cols.index, w, c) for w in cols.weight]).astype(np.float32)      # (T, W, C)
    row_taps = np.concatenate([taps_matrix(rows.index, w, r) for w in rows.weight], axis=1).astype(np.float32)
    flat = np.matmul(col_taps[None, :, None], grid[:, None]).reshape(b, -1, width * k)  # (B, T*R, W*K)
    scale = (1.0 / (rows.mass.T @ cols.mass)).astype(np.float32) if plan.normalised else None  # (H, W)
    out = np.empty((b, height, width, k), dtype=np.float32)
    step = max(1, _ROW_CHUNK_VALUES // max(1, width * k))
    for r0 in range(0, height, step):
        r1 = min(height, r0 + step)
        out[:, r0:r1] = np.matmul(row_taps[r0:r1], flat).reshape(b, r1 - r0, width, k)
        if scale is not None:
            out[:, r0:r1] *= scale[r0:r1, :, None]
    return out


def weighted_sum(grid: np.ndarray, plan: FieldPlan, weights: np.ndarray) -> np.ndarray:
    """sum over the pixels of a dense plan of weights[h, w] * field[h, w] -> (K,), without the (H, W, K) field:
    per term, rows^T (weights) cols gives each grid entry's total weight. grid (R, C, K), weights (H, W)."""
    r, c, _ = grid.shape
    rows, cols = plan.rows, plan.cols
    weights = np.asarray(weights, np.float64)
    if plan.normalised:
        weights = weights / (rows.mass.T @ cols.mass)
    total = np.zeros((r, c), np.float64)
    for row_w, col_w in zip(rows.weight, cols.weight):
        total += taps_matrix(rows.index, row_w, r).T @ weights @ taps_matrix(cols.index, col_w, c)
    return np.tensordot(total.astype(np.float32), grid, axes=([0, 1], [0, 1]))
