"""From crop tokens to the embedding field of a block of pixels: tokens blended on the lattice, then one NILI pass.

The crops covering a lattice cell give it the weighted mean of their tokens (tiling.TokenLattice); NILI (or bilinear,
bicubic) then reads the block's cells as one token grid, so every pixel is computed once and sees its real neighbour
cells. PCA is folded into `imnet` (NILI: exact, its corner weights sum to one and imnet is linear) or applied to the
tokens (bilinear/bicubic, linear in the tokens). numpy only: the torch and ONNX backends share it.
"""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np

from ..io.pca import PCAProjection
from ..runtime.field import Imnet, augment, project_ringed, sample_dense, weighted_sum
from ..runtime.grid import lattice_plan
from ..runtime.protocol import GAIRModelLike
from .tiling import TokenLattice

SAMPLE_TILE = 256  # pixels per side sampled at once: the taps matrices stay small (a block is many of these)


def imnet_of(model: GAIRModelLike) -> Imnet:
    """NILI's `imnet` of either backend as numpy weights."""
    imnet = model.imnet
    if isinstance(imnet, Imnet):
        return imnet
    return Imnet.from_linear(imnet.weight.detach().cpu().float().numpy(), imnet.bias.detach().cpu().float().numpy())


def numpy_blas_beside(model: GAIRModelLike):
    """Context: numpy's BLAS on one thread while a torch model runs in this process.

    torch's OpenMP workers spin after each op; numpy's OpenBLAS threads then fight them for the cores (measured:
    a 768 x 768 eigh 0.3 s alone, 3.5 s after a torch matmul, 0.3 s with one BLAS thread).
    """
    if model.backend != "torch":
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def blend_tokens(lattice: TokenLattice, tokens: dict[int, np.ndarray], cells: tuple[int, int, int, int],
                 depth: int) -> tuple[np.ndarray, np.ndarray]:
    """(R, C, depth) weighted mean tokens of lattice cells rows [a, b) x cols [c, d) from the crops in `tokens`
    (index -> (G*G, depth)), and (R, C) whether any crop gave the cell a token (not: cells of skipped crops)."""
    a, b, c, d = cells
    g = lattice.rows.cells
    total = np.zeros((b - a, d - c, depth), np.float32)
    mass = np.zeros((b - a, d - c), np.float32)
    for index in lattice.crops_for(a, b, c, d):
        grid = tokens.get(index)
        if grid is None:
            continue
        (r0, c0), (wr, wc) = lattice.cell_origin(index), lattice.weights(index)
        ra, rb, ca, cb = max(a, r0), min(b, r0 + g), max(c, c0), min(d, c0 + g)
        weight = np.outer(wr[ra - r0:rb - r0], wc[ca - c0:cb - c0])
        part = grid.reshape(g, g, -1)[ra - r0:rb - r0, ca - c0:cb - c0]
        total[ra - a:rb - a, ca - c:cb - c] += part * weight[..., None]
        mass[ra - a:rb - a, ca - c:cb - c] += weight
    has = mass > 0
    total /= np.where(has, mass, 1.0)[..., None]
    return total, has


def _window_all(has: np.ndarray, size: int = 4) -> np.ndarray:
    """ok[i, j]: every cell of has[i:i+size, j:j+size] is set (windows past the edge count as unset)."""
    s = np.zeros((has.shape[0] + 1, has.shape[1] + 1), np.int32)
    s[1:, 1:] = has.cumsum(0).cumsum(1)
    r, c = np.arange(has.shape[0])[:, None], np.arange(has.shape[1])[None, :]
    r1, c1 = np.minimum(r + size, has.shape[0]), np.minimum(c + size, has.shape[1])
    count = s[r1, c1] - s[r, c1] - s[r1, c] + s[r, c]
    return count == size * size


class LatticeField:
    """The field of a block of pixels from its lattice cells, in the output space (a PCA's or the model's dims)."""

    def __init__(self, model: GAIRModelLike, lattice: TokenLattice, mode: str, pca: PCAProjection | None) -> None:
        self.lattice, self.mode, self.depth = lattice, mode, model.config.embed_dim
        self.imnet = self.token_map = None
        if mode == "nili":
            imnet = imnet_of(model)
            self.imnet = imnet.projected(pca.components, pca.components @ pca.mean) if pca is not None else imnet
        elif pca is not None:
            self.token_map = (np.asarray(pca.components, np.float32).T,
                              np.asarray(pca.components @ pca.mean, np.float32))

    def _cells(self, tokens: dict[int, np.ndarray], row0: int, row1: int, col0: int, col1: int):
        """The grid NILI (or bilinear/bicubic) samples for pixels [row0, row1) x [col0, col1), its first cell, the
        block's first cell and `ok` (ok[i - a, j - c]: the 4 x 4 cells from (i, j) all have tokens)."""
        a, b, c, d = self.lattice.cells_for(row0, row1, col0, col1)
        grid, has = blend_tokens(self.lattice, tokens, (a, b, c, d), self.depth)
        if self.imnet is not None:  # projected cells [a+1, b-1) x [c+1, d-1), read with their real neighbours
            return project_ringed(grid[None], self.imnet)[0], (a + 1, c + 1), (a, c), _window_all(has)
        if self.token_map is not None:
            grid = grid @ self.token_map[0] - self.token_map[1]
        return grid, (a, c), (a, c), _window_all(has)

    def _tiles(self, row0: int, row1: int, col0: int, col1: int):
        for r in range(row0, row1, SAMPLE_TILE):
            for q in range(col0, col1, SAMPLE_TILE):
                yield r, min(row1, r + SAMPLE_TILE), q, min(col1, q + SAMPLE_TILE)

    def _plan(self, grid: np.ndarray, ok: np.ndarray, first: tuple[int, int], block_cell: tuple[int, int],
              r0: int, r1: int, c0: int, c1: int):
        """The cells of pixels [r0, r1) x [c0, c1), their plan, and which of the pixels read only cells with tokens."""
        lat = self.lattice
        ta, tb, tc, td = lat.cells_for(r0, r1, c0, c1)
        if self.imnet is not None:
            ta, tb, tc, td = ta + 1, tb - 1, tc + 1, td - 1  # the corners; their ring was used by the projection
        part = grid[ta - first[0]:tb - first[0], tc - first[1]:td - first[1]]
        if self.imnet is not None:
            part = augment(part[None], self.imnet)[0]
        u_rows, u_cols = lat.rows.position(np.arange(r0, r1)), lat.cols.position(np.arange(c0, c1))
        plan = lattice_plan(u_rows - ta, u_cols - tc, tb - ta, td - tc, self.mode)
        rows = np.floor(u_rows - 0.5).astype(np.int64) - 1 - block_cell[0]
        cols = np.floor(u_cols - 0.5).astype(np.int64) - 1 - block_cell[1]
        return part, plan, ok[np.ix_(rows, cols)]

    def block(self, tokens: dict[int, np.ndarray], row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        """(K, rows, cols) float32 field of output pixels [row0, row1) x [col0, col1) (raster-relative), NaN where
        a cell it reads has no token; a view of a pixel-major array, as the kernel makes it."""
        grid, first, block_cell, ok = self._cells(tokens, row0, row1, col0, col1)
        out = np.empty((row1 - row0, col1 - col0, grid.shape[-1]), np.float32)
        for r0, r1, c0, c1 in self._tiles(row0, row1, col0, col1):
            part, plan, fine = self._plan(grid, ok, first, block_cell, r0, r1, c0, c1)
            tile = out[r0 - row0:r1 - row0, c0 - col0:c1 - col0]
            tile[...] = sample_dense(part[None], plan)[0]
            tile[~fine] = np.nan
        return out.transpose(2, 0, 1)

    def mean(self, tokens: dict[int, np.ndarray], row0: int, row1: int, col0: int, col1: int,
             weights: np.ndarray) -> np.ndarray | None:
        """(K,) weighted mean of the field over pixels [row0, row1) x [col0, col1) (weights (rows, cols), e.g. a
        polygon's mask), never building the field; pixels without tokens are left out; None when none is left."""
        grid, first, block_cell, ok = self._cells(tokens, row0, row1, col0, col1)
        total, mass = np.zeros(grid.shape[-1], np.float64), 0.0
        for r0, r1, c0, c1 in self._tiles(row0, row1, col0, col1):
            part, plan, fine = self._plan(grid, ok, first, block_cell, r0, r1, c0, c1)
            w = weights[r0 - row0:r1 - row0, c0 - col0:c1 - col0] * fine
            if w.any():
                total += weighted_sum(part, plan, w)
                mass += float(w.sum())
        return (total / mass).astype(np.float32) if mass > 0 else None
