"""The quicklook of an embedding raster: three principal components as a small georeferenced RGBA PNG."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..io.files import PAM, PendingFile

QUICKLOOK_SIDE = 1024


class Quicklook:
    """A small RGB (+alpha for nodata) PNG of three principal components, filled block by block; georeferenced
    (an .aux.xml beside it) so it lands on the map over its embedding raster."""

    def __init__(self, height: int, width: int, sample: np.ndarray, first_three: bool) -> None:
        dims = sample.shape[1]
        if first_three:
            self.mean, self.basis = np.zeros(dims, np.float32), np.eye(min(3, dims), dims, dtype=np.float32)
        else:
            from sklearn.decomposition import PCA

            pca = PCA(n_components=min(3, *sample.shape), random_state=0).fit(sample)
            self.mean, self.basis = pca.mean_.astype(np.float32), pca.components_.astype(np.float32)
        rgb = (sample - self.mean) @ self.basis.T
        self.lo, self.hi = np.percentile(rgb, 2, axis=0), np.percentile(rgb, 98, axis=0)
        self.step = max(1, math.ceil(max(height, width) / QUICKLOOK_SIDE))
        self.image = np.zeros((math.ceil(height / self.step), math.ceil(width / self.step), 4), np.uint8)

    def add(self, block: np.ndarray, row0: int, col0: int) -> None:
        rows = np.arange(-row0 % self.step, block.shape[1], self.step)
        cols = np.arange(-col0 % self.step, block.shape[2], self.step)
        if not len(rows) or not len(cols):
            return
        pixels = block[:, rows][:, :, cols]
        valid = np.isfinite(pixels).all(axis=0)
        rgb = np.einsum("khw,ck->hwc", np.nan_to_num(pixels) - self.mean[:, None, None], self.basis)
        scaled = np.clip((rgb - self.lo) / np.maximum(self.hi - self.lo, 1e-12) * 255, 0, 255).astype(np.uint8)
        out = self.image[(row0 + rows[0]) // self.step:, (col0 + cols[0]) // self.step:][:len(rows), :len(cols)]
        out[..., :scaled.shape[-1]] = scaled
        out[..., 3] = np.where(valid, 255, 0)

    def save(self, path: Path, crs, transform) -> Path:
        """Write the PNG and its .aux.xml (CRS, and the raster's transform with pixels `step` times larger)."""
        import rasterio
        from rasterio.transform import Affine

        height, width = self.image.shape[:2]
        pending = PendingFile(path, sidecars=(PAM,))
        try:
            with rasterio.open(pending.tmp, "w", driver="PNG", width=width, height=height, count=4, dtype="uint8",
                               crs=crs, transform=transform * Affine.scale(self.step)) as ds:
                ds.write(np.moveaxis(self.image, -1, 0))
        except BaseException:
            pending.abort()
            raise
        return pending.commit()
