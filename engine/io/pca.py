"""PCA reduction of an embedding space, stored as a sidecar beside the raster so later vectors land in the same space.

`<raster stem>.pca.npz` holds mean (D,), components (K, D), explained_variance_ratio (K,), the model fingerprint and
the projection's hash (`sha`), which the raster records too (GAIR_PCA_SHA) so a sidecar cannot be swapped.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..errors import GAIRError
from .files import atomic_path


class PCAProjection:
    """A linear map from a model's D-dim space to K dims; `sha`, a hash of its arrays, names it."""

    def __init__(self, mean: np.ndarray, components: np.ndarray, explained_variance_ratio: np.ndarray,
                 model: str) -> None:
        self.mean = np.ascontiguousarray(mean, dtype=np.float32)
        self.components = np.ascontiguousarray(components, dtype=np.float32)
        self.explained_variance_ratio = np.asarray(explained_variance_ratio, dtype=np.float32)
        self.model = str(model)
        if self.components.ndim != 2 or self.mean.shape != (self.components.shape[1],):
            raise GAIRError(f"PCA sidecar is inconsistent: mean {self.mean.shape}, components {self.components.shape}")
        shape = np.array(self.components.shape, np.int64).tobytes()
        self.sha = hashlib.sha256(shape + self.mean.tobytes() + self.components.tobytes()).hexdigest()[:16]

    @property
    def dims(self) -> int:
        return self.components.shape[0]

    @property
    def input_dims(self) -> int:
        return self.components.shape[1]

    @classmethod
    def from_sample(cls, vectors: np.ndarray, dims: int, model: str, seed: int = 0) -> PCAProjection:
        """Fit on (N, D) sample vectors (e.g. `sample_pixels` of a full-dims raster).

        Tall samples (N >= 10 D, as the pipeline's 16384 x 768) use the covariance solver: one D x D Gram matrix
        and its eigendecomposition (0.15 s on 2 cores, 0.23 s on the one BLAS thread the pipeline gives it; no copy
        of the sample), exact to float32 rounding, where the randomized solver older scikit-learn picks is ~4x
        slower and approximate. scikit-learn >= 1.5 picks it
        by itself; it is named so that the choice does not move with the library's heuristics.
        """
        from sklearn.decomposition import PCA

        vectors = np.asarray(vectors, dtype=np.float32)
        finite = np.isfinite(vectors).all(axis=1)
        if not finite.all():
            vectors = vectors[finite]
        if not 0 < dims <= min(vectors.shape):
            raise GAIRError(f"PCA to {dims} dims needs at least {dims} valid samples of >= {dims} dims; "
                            f"got {vectors.shape}. Use fewer dims or a larger sample.")
        solver = "auto"
        if vectors.shape[0] >= 10 * vectors.shape[1] and _has_covariance_solver():
            solver = "covariance_eigh"
        pca = PCA(n_components=dims, random_state=seed, svd_solver=solver).fit(vectors)
        return cls(pca.mean_, pca.components_, pca.explained_variance_ratio_, model)

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape[-1] != self.input_dims:
            raise GAIRError(f"PCA projection {self.sha} takes {self.input_dims}-dim vectors, got {vectors.shape[-1]}")
        return (vectors - self.mean) @ self.components.T

    def save(self, path: str | os.PathLike) -> Path:
        with atomic_path(path, ".npz") as tmp:
            np.savez(tmp, mean=self.mean, components=self.components,
                     explained_variance_ratio=self.explained_variance_ratio,
                     model=np.array(self.model), sha=np.array(self.sha))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PCAProjection:
        if not Path(path).is_file():
            raise GAIRError(f"PCA sidecar {path} is missing; keep it beside its embedding raster")
        with np.load(path, allow_pickle=False) as data:
            pca = cls(data["mean"], data["components"], data["explained_variance_ratio"], str(data["model"]))
            stored = str(data["sha"]) if "sha" in data.files else ""
        if stored != pca.sha:
            raise GAIRError(f"PCA sidecar {path} is damaged or from an older GAIR version (its hash does not match its "
                            "contents); re-embed the raster")
        return pca


def _has_covariance_solver() -> bool:
    """Whether this scikit-learn has PCA's svd_solver='covariance_eigh' (added in 1.5)."""
    import sklearn

    try:
        return tuple(int(part) for part in sklearn.__version__.split(".")[:2]) >= (1, 5)
    except ValueError:  # a development version string: assume new
        return True


def shared_projection(source: PCAProjection | str | os.PathLike, model: str, model_dims: int) -> PCAProjection:
    """The projection `--pca-from` names: a `.pca.npz` sidecar, or an embedding raster (its sidecar, checked by hash).

    Rasters reduced by one projection share one space: tiles and dates can then be compared, mosaicked and used in
    change detection. A projection of another model (fingerprint) or of another number of input dims is refused.
    """
    if isinstance(source, PCAProjection):
        pca, name = source, f"PCA projection {source.sha}"
    else:
        path, name = Path(source), Path(source).name
        if path.suffix.lower() == ".npz":
            pca = PCAProjection.load(path)
        else:
            from .embedding_raster import EmbeddingRaster

            with EmbeddingRaster(path) as raster:
                pca = raster.pca
            if pca is None:
                raise GAIRError(f"--pca-from {name} keeps the model's full space (no PCA sidecar); give a raster "
                                "embedded with --dims, or its .pca.npz")
    if pca.model != model:
        raise GAIRError(f"--pca-from {name} was fitted on the vectors of model {pca.model[:12]}, not of the model "
                        f"in use ({model[:12]}); embed with that model, or fit a new PCA (leave --pca-from out)")
    if pca.input_dims != model_dims:
        raise GAIRError(f"--pca-from {name} takes {pca.input_dims}-dim vectors but the model gives {model_dims}; "
                        "use a PCA fitted with this model")
    return pca
