"""Blending per-crop NILI fields into one seamless field, block by block.

Every output pixel is the weighted mean of the fields of all crops covering it, with the crops' tapered weights
(see tiling.AnchoredLayout.weights). Projection to PCA dims happens per crop before blending, which is exact: the
blend is a convex combination and the projection is affine.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import numpy as np

from ..io.pca import PCAProjection
from ..runtime.protocol import GAIRModelLike


def crop_field(model: GAIRModelLike, tokens: np.ndarray, height: int, width: int, mode: str = "nili",
               pca: PCAProjection | None = None) -> np.ndarray:
    """(height, width, K) field of one crop at the centres of a height x width grid over it (K = PCA or model dims)."""
    field = np.asarray(model.dense_field(tokens[None], height, width, mode=mode))[0]
    if pca is not None:
        field = pca.transform(field.reshape(-1, field.shape[-1])).reshape(height, width, -1)
    return field.astype(np.float32, copy=False)


def pca_field(model: GAIRModelLike, pca: PCAProjection, mode: str) -> Callable[[np.ndarray, int, int], np.ndarray]:
    """fn(tokens (G*G, D), height, width) -> one crop's (height, width, K) field in the PCA space.

    The model computes it in the K-dim space (model.projected_field), 1/K-th of the work of `crop_field` then PCA,
    with the same numbers: the PCA is affine and the NILI blend convex.
    """
    field = model.projected_field(pca.components, pca.components @ pca.mean, mode)
    return lambda tokens, height, width: np.asarray(field(tokens[None], height, width), dtype=np.float32)[0]


def numpy_blas_beside(model: GAIRModelLike):
    """Context: numpy's BLAS on one thread while a torch model runs in this process.

    torch's OpenMP workers spin after each op; numpy's OpenBLAS threads then fight them for the cores (measured:
    a 768 x 768 eigh 0.3 s alone, 3.5 s after a torch matmul, 0.3 s with one BLAS thread).
    """
    if model.backend != "torch":
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


class BlockBlender:
    """Running sums of w*f and w over one output block at rows [row0, row0+height), cols [col0, col0+width)."""

    def __init__(self, row0: int, col0: int, height: int, width: int, dims: int) -> None:
        self.row0, self.col0, self.height, self.width = row0, col0, height, width
        self.sum_wf = np.zeros((height, width, dims), dtype=np.float32)
        self.sum_w = np.zeros((height, width), dtype=np.float32)

    def add(self, field: np.ndarray, wy: np.ndarray, wx: np.ndarray, row0: int, col0: int) -> None:
        """Add a crop's (h, w, K) field placed at output (row0, col0), weighted by the outer product wy x wx."""
        h, w = field.shape[:2]
        r0, r1 = max(row0, self.row0), min(row0 + h, self.row0 + self.height)
        c0, c1 = max(col0, self.col0), min(col0 + w, self.col0 + self.width)
        if r0 >= r1 or c0 >= c1:
            return
        weight = np.outer(wy[r0 - row0:r1 - row0], wx[c0 - col0:c1 - col0])
        part = field[r0 - row0:r1 - row0, c0 - col0:c1 - col0]
        self.sum_wf[r0 - self.row0:r1 - self.row0, c0 - self.col0:c1 - self.col0] += part * weight[..., None]
        self.sum_w[r0 - self.row0:r1 - self.row0, c0 - self.col0:c1 - self.col0] += weight

    def result(self, valid: np.ndarray | None = None) -> np.ndarray:
        """(K, height, width) blended field, NaN where no crop contributed or the input is nodata.

        Divides the sums in place (no second block-sized buffer), so call it once, last.
        """
        covered = self.sum_w > 0
        if valid is not None:
            covered &= valid
        self.sum_wf /= np.where(covered, self.sum_w, np.nan)[..., None]
        return self.sum_wf.transpose(2, 0, 1)
