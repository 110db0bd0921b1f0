"""Blending per-crop NILI fields into one seamless field, block by block.

Every output pixel is the weighted mean of the fields of all crops covering it, with the crops' tapered weights
(see tiling.CropLayout.weights). Projection to PCA dims happens per crop before blending, which is exact: the
blend is a convex combination and the projection is affine.
"""
from __future__ import annotations

import numpy as np

from ..io.pca import PCAProjection


def crop_field(model, tokens: np.ndarray, height: int, width: int, mode: str = "nili",
               pca: PCAProjection | None = None) -> np.ndarray:
    """(height, width, K) field of one crop at the centres of a height x width grid over it (K = PCA or model dims)."""
    field = np.asarray(model.dense_field(tokens[None], height, width, mode=mode))[0]
    if pca is not None:
        field = pca.transform(field.reshape(-1, field.shape[-1])).reshape(height, width, -1)
    return field.astype(np.float32, copy=False)


class ProjectedField:
    """Crop fields computed directly in a PCA space, 1/K-th of the work of the model-space field.

    NILI blends imnet outputs with weights summing to one, and imnet is linear, so projecting imnet's weight and
    bias (bias minus the PCA mean) gives the projected field exactly; bilinear/bicubic interpolation is linear in
    the tokens, so projecting the tokens does. Works on the torch model and the ONNX backend's numpy imnet; any
    other model or mode falls back to `crop_field` (same numbers, slower).
    """

    def __init__(self, model, pca: PCAProjection, mode: str) -> None:
        self.model, self.pca, self.mode = model, pca, mode
        self.convention = model.config.nili_convention
        self.shift = pca.components @ pca.mean  # (K,): the projected mean
        self._dense = None
        imnet = getattr(model, "imnet", None)
        if mode in ("bilinear", "bicubic"):
            self._dense = self._interp_torch if _is_torch(model) else self._interp_numpy
        elif mode == "nili" and _is_torch(model):
            import torch

            weight = imnet.weight.detach()
            comps = torch.as_tensor(pca.components, dtype=weight.dtype, device=weight.device)
            self._linear = torch.nn.Linear(imnet.in_features, pca.dims).to(weight.device, weight.dtype)
            with torch.no_grad():
                self._linear.weight.copy_(comps @ weight)
                self._linear.bias.copy_(comps @ imnet.bias.detach() - comps @ torch.as_tensor(
                    pca.mean, dtype=weight.dtype, device=weight.device))
            self._dense = self._nili_torch
        elif mode == "nili" and imnet is not None and hasattr(imnet, "cell"):
            from ..runtime.field import Imnet

            comps = pca.components
            self._imnet = Imnet(np.ascontiguousarray(imnet.cell @ comps.T), np.ascontiguousarray(comps @ imnet.rel),
                                (comps @ imnet.bias - self.shift).astype(np.float32))
            self._dense = self._nili_numpy

    def __call__(self, tokens: np.ndarray, height: int, width: int) -> np.ndarray:
        if self._dense is None:
            return crop_field(self.model, tokens, height, width, self.mode, self.pca)
        return np.asarray(self._dense(tokens[None], height, width), dtype=np.float32)[0]

    def _nili_torch(self, tokens, height, width):
        import torch

        from ..model.query import dense_nili

        with torch.inference_mode():
            t = torch.as_tensor(tokens, device=self.model.device, dtype=self.model.dtype)
            return dense_nili(t, height, width, self._linear, self.convention).cpu().numpy()

    def _nili_numpy(self, tokens, height, width):
        from ..runtime.field import dense_nili

        return dense_nili(tokens, height, width, self._imnet, self.convention)

    def _interp_torch(self, tokens, height, width):
        import torch

        from ..model.query import dense_interp

        with torch.inference_mode():
            t = torch.as_tensor(tokens @ self.pca.components.T, device=self.model.device, dtype=self.model.dtype)
            return dense_interp(t, height, width, self.mode).cpu().numpy() - self.shift

    def _interp_numpy(self, tokens, height, width):
        from ..runtime.field import dense_interp

        return dense_interp(tokens @ self.pca.components.T, height, width, self.mode) - self.shift


def _is_torch(model) -> bool:
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def numpy_blas_beside(model):
    """Context: numpy's BLAS on one thread while a torch model runs in this process.

    torch's OpenMP workers spin after each op; numpy's OpenBLAS threads then fight them for the cores (measured:
    a 768 x 768 eigh 0.3 s alone, 3.5 s after a torch matmul, 0.3 s with one BLAS thread).
    """
    from contextlib import nullcontext

    if not _is_torch(model):
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
