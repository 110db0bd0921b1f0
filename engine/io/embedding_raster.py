"""The embedding raster format: one GeoTIFF band per embedding dimension, tagged with the vector space it lives in.

Writers (the pipeline) and readers (analysis, plugin) share this module so the tags, nodata rules, int16 scaling
and PCA sidecar are defined once. See docs/ENGINE_API.md, "Embedding raster format".
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from ..errors import GAIRError
from ..params import DTYPES
from .blocks import Cancel, Progress, block_windows, walk
from .files import PAM, PendingFile, pca_sidecar_path
from .pca import PCAProjection
from .read_errors import check_readable_file, raster_read_errors
from .space import EmbeddingSpace

BAND_PREFIX = "gair_"
INT16_NODATA = -32768
INT16_LIMIT = 32767
# What a GAIR raster is: embedding rasters hold vectors; derived rasters (analysis outputs) hold one value per pixel.
TAG_KIND = "GAIR_KIND"
KIND_EMBEDDING = "embedding"
DERIVED_KINDS = ("classes", "confidence", "similarity", "mask", "prediction")
TAG_CROP_PIXELS, TAG_CROP_GROUND_M = "GAIR_CROP_PIXELS", "GAIR_CROP_GROUND_M"
TAG_DIMS, TAG_PCA = "GAIR_DIMS", "GAIR_PCA"
TAG_MODEL_DIMS = "GAIR_MODEL_DIMS"  # dims of the model's own space (differs from GAIR_DIMS after PCA)


def band_names(dims: int) -> list[str]:
    return [f"{BAND_PREFIX}{i:03d}" for i in range(dims)]


def int16_scale_offset(sample: np.ndarray, margin: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Per-band GDAL scale/offset so a sample's range (widened by `margin`) fits int16 without clipping."""
    sample = np.asarray(sample, dtype=np.float64)
    lo, hi = np.nanmin(sample, axis=0), np.nanmax(sample, axis=0)
    offset = (lo + hi) / 2
    half = np.maximum((hi - lo) / 2 * margin, 1e-6)
    return (half / INT16_LIMIT).astype(np.float64), offset


class EmbeddingRasterWriter:
    """Writes an embedding raster to a temp file beside `path`; `commit()` renames it into place, `abort()` deletes.

    Use as a context manager: commits on success, aborts on any exception (including Cancelled).
    Band-interleaved tiles, compressed with ZSTD level 1 (fast; QGIS 3.22's GDAL reads it) with the floating-point
    predictor for float32 (~20% smaller) and the integer predictor for int16. compress="none" writes plain tiles,
    which analysis reads about 3x faster (through mmap) at the cost of size.
    """

    def __init__(self, path: str | os.PathLike, *, width: int, height: int, crs, transform, dims: int, model: str,
                 query_mode: str = "nili", nili_convention: str = "released", options: dict | None = None,
                 crop_pixels: int | None = None, crop_ground_m: float | None = None, dtype: str = "float32",
                 pca: PCAProjection | None = None, scale: Sequence[float] | float | None = None,
                 offset: Sequence[float] | float | None = None, tile: int = 256, compress: str | None = "auto",
                 extra_tags: dict | None = None) -> None:
        import rasterio

        if dtype not in DTYPES:
            raise GAIRError(f"embedding raster dtype must be one of {DTYPES}, got {dtype!r}")
        if pca is not None and pca.dims != dims:
            raise GAIRError(f"PCA has {pca.dims} dims but the raster {dims} bands")
        if crs is None:
            raise GAIRError("an embedding raster needs a CRS; give the CRS of the source imagery")
        self.path, self.dims, self.dtype, self.pca = Path(path), int(dims), dtype, pca
        self.space = EmbeddingSpace(model, query_mode, nili_convention, pca.sha if pca else "", dict(options or {}))
        self.scale = self.offset = None
        if dtype == "int16":
            if scale is None:
                raise GAIRError("int16 embedding rasters need a scale (and offset); compute them with "
                                "engine.io.embedding_raster.int16_scale_offset(sample)")
            self.scale = np.broadcast_to(np.asarray(scale, np.float64), (dims,)).copy()
            self.offset = np.broadcast_to(np.asarray(0.0 if offset is None else offset, np.float64), (dims,)).copy()
        self._pending = PendingFile(self.path, sidecars=(PAM,))
        profile = {"driver": "GTiff", "width": int(width), "height": int(height), "count": self.dims, "dtype": dtype,
                   "crs": crs, "transform": transform, "tiled": True, "blockxsize": tile, "blockysize": tile,
                   "interleave": "band", "BIGTIFF": "IF_SAFER",
                   "nodata": float("nan") if dtype == "float32" else INT16_NODATA}
        if compress == "auto":
            compress = "zstd"
        if compress not in (None, "none"):
            profile.update(compress=compress, predictor=3 if dtype == "float32" else 2)
            if compress == "zstd":
                profile["zstd_level"] = 1
        tags = {**(extra_tags or {}), TAG_KIND: KIND_EMBEDDING, **self.space.tags(),
                TAG_CROP_PIXELS: "" if crop_pixels is None else str(int(crop_pixels)),
                TAG_CROP_GROUND_M: "" if crop_ground_m is None else repr(float(crop_ground_m)),
                TAG_DIMS: str(self.dims), TAG_MODEL_DIMS: str(pca.input_dims if pca else self.dims),
                TAG_PCA: pca_sidecar_path(self.path).name if pca else ""}
        self._ds = rasterio.open(self._pending.tmp, "w", **profile)
        try:
            self._ds.update_tags(**tags)
            for i, name in enumerate(band_names(self.dims), start=1):
                self._ds.set_band_description(i, name)
            if self.scale is not None:
                self._ds.scales, self._ds.offsets = tuple(self.scale), tuple(self.offset)
        except Exception:
            self.abort()
            raise

    def write(self, window, block: np.ndarray) -> None:
        """Write a (K, h, w) float block (NaN = nodata) at a rasterio Window."""
        block = np.asarray(block)
        if block.shape != (self.dims, int(window.height), int(window.width)):
            raise GAIRError(f"block shape {block.shape} does not match window {window} with {self.dims} bands")
        if self.dtype == "int16":
            invalid = ~np.isfinite(block).all(axis=0)
            raw = np.rint((block - self.offset[:, None, None]) / self.scale[:, None, None])
            raw = np.clip(np.nan_to_num(raw), -INT16_LIMIT, INT16_LIMIT).astype(np.int16)
            raw[:, invalid] = INT16_NODATA
            block = raw
        else:
            block = block.astype(np.float32, copy=False)
        self._ds.write(block, window=window)

    def commit(self) -> Path:
        """Close and move into place (sidecar first, so a raster never exists without its PCA)."""
        self._ds.close()
        try:
            if self.pca is not None:
                self.pca.save(pca_sidecar_path(self.path))
            else:  # a sidecar left by an older run of the same name would describe another projection
                pca_sidecar_path(self.path).unlink(missing_ok=True)
        except BaseException:
            self._pending.abort()
            raise
        return self._pending.commit()

    def abort(self) -> None:
        if not self._ds.closed:
            self._ds.close()
        self._pending.abort()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


@dataclass(frozen=True)
class EmbeddingMeta:
    """What the vectors of a raster or layer are: their space (model, query mode, PCA...) and dimensions."""

    space: EmbeddingSpace
    dims: int
    model_dims: int
    crop_pixels: int | None = None
    crop_ground_m: float | None = None
    pca_file: str = ""

    @property
    def model(self) -> str:
        return self.space.model


class EmbeddingRaster:
    """An open embedding raster: metadata plus float32 block reads with NaN for nodata.

    Refuses rasters that are not embeddings (analysis outputs say what they are in GAIR_KIND) and a PCA sidecar
    that is not the projection the raster was written with.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import rasterio

        self.path = check_readable_file(path, "embedding raster")
        with rasterio.Env(GTIFF_VIRTUAL_MEM_IO="IF_ENOUGH_RAM"), raster_read_errors(self.path, opening=True):
            self._ds = rasterio.open(self.path)  # uncompressed tiles via mmap: ~2x faster reads
        try:
            self.meta = self._read_meta()
            self.pca = self._load_pca()
        except Exception:
            self._ds.close()
            raise
        self.int16 = self._ds.dtypes[0] == "int16"
        self._scale = np.asarray(self._ds.scales, np.float32)[:, None, None]
        self._offset = np.asarray(self._ds.offsets, np.float32)[:, None, None]

    def _read_meta(self) -> EmbeddingMeta:
        tags = self._ds.tags()
        kind = tags.get(TAG_KIND, "")
        if kind in DERIVED_KINDS:
            raise GAIRError(f"{self.path.name} is a GAIR {kind} raster (an analysis result), not an embedding "
                            "raster; choose the embedding raster it was made from")
        if kind != KIND_EMBEDDING:
            what = "was written by an older GAIR version" if kind or "GAIR_MODEL" in tags else "has no GAIR tags"
            raise GAIRError(f"{self.path.name} is not a GAIR embedding raster ({what}); make one with "
                            "`python -m engine embed-raster`")
        space = EmbeddingSpace.from_tags(tags, self.path.name)
        dims = self._ds.count
        if tags.get(TAG_DIMS) and int(tags[TAG_DIMS]) != dims:
            raise GAIRError(f"{self.path} says {tags[TAG_DIMS]} dims but has {dims} bands; the file is damaged")
        crop_px, crop_m = tags.get(TAG_CROP_PIXELS, ""), tags.get(TAG_CROP_GROUND_M, "")
        return EmbeddingMeta(space=space, dims=dims, model_dims=int(tags.get(TAG_MODEL_DIMS) or dims),
                             crop_pixels=int(crop_px) if crop_px else None,
                             crop_ground_m=float(crop_m) if crop_m else None, pca_file=tags.get(TAG_PCA, ""))

    def _load_pca(self) -> PCAProjection | None:
        """The raster's own sidecar (by its current name, else the name it was written with), checked by hash."""
        need = self.meta.space.pca
        if not need:
            return None
        candidates = [pca_sidecar_path(self.path)]
        if self.meta.pca_file:
            candidates.append(self.path.with_name(self.meta.pca_file))
        found = [p for p in dict.fromkeys(candidates) if p.is_file()]
        if not found:
            raise GAIRError(f"PCA sidecar {candidates[0].name} of {self.path.name} is missing; keep the "
                            ".pca.npz written with the raster beside it (or re-embed)")
        for sidecar in found:
            pca = PCAProjection.load(sidecar)
            if pca.sha == need:
                return pca
        raise GAIRError(f"{found[0].name} belongs to another embedding run (PCA projection {pca.sha}, but "
                        f"{self.path.name} needs {need}); put the raster's own sidecar beside it as "
                        f"{candidates[0].name}, or re-embed")

    # -- geometry ------------------------------------------------------------------------------------------------
    dims = property(lambda self: self.meta.dims)
    width = property(lambda self: self._ds.width)
    height = property(lambda self: self._ds.height)
    crs = property(lambda self: self._ds.crs)
    transform = property(lambda self: self._ds.transform)
    nodata = property(lambda self: self._ds.nodata)
    profile = property(lambda self: self._ds.profile)
    tile_shape = property(lambda self: self._ds.block_shapes[0])

    def windows(self, block_size: int | None = None) -> list:
        """Windows covering the raster, aligned with the GeoTIFF tiles (block_size rounded to whole tiles)."""
        th, tw = self.tile_shape
        bh = max(th, (block_size or th) // th * th)
        bw = max(tw, (block_size or tw) // tw * tw)
        return block_windows(self.height, self.width, bh, bw)

    # -- reading -------------------------------------------------------------------------------------------------
    def read_block(self, window, buffer: np.ndarray | None = None) -> np.ndarray:
        """(K, h, w) float32, NaN where nodata; int16 rasters are unscaled with their GDAL scale/offset.

        `buffer`: optional 1-D float32 scratch of >= K*h*w elements; the result is then a view of it (scans reuse
        one buffer instead of page-faulting a fresh array per block, ~1.5x faster reads).
        """
        shape = (self.dims, int(window.height), int(window.width))
        size = shape[0] * shape[1] * shape[2]
        out = np.empty(shape, np.float32) if buffer is None else buffer[:size].reshape(shape)
        with raster_read_errors(self.path):
            if not self.int16:
                return self._ds.read(window=window, out=out)
            raw = self._ds.read(window=window)
        np.multiply(raw, self._scale, out=out)
        out += self._offset
        out[:, (raw == INT16_NODATA).any(axis=0)] = np.nan
        return out

    def read_pixels(self, window) -> np.ndarray:
        """(h*w, K) C-contiguous float32, pixel-major (the layout scikit-learn wants), NaN rows for nodata.

        Reads band-major and transposes in numpy: GDAL's own pixel-interleaved copy is several times slower.
        """
        return np.ascontiguousarray(self.read_block(window).reshape(self.dims, -1).T)

    def read_valid_mask(self, window) -> np.ndarray:
        """(h, w) bool from the first band only: cheap, and nodata is written across all bands."""
        with raster_read_errors(self.path):
            band = self._ds.read(1, window=window)
        return band != INT16_NODATA if self.int16 else np.isfinite(band)

    def iter_blocks(self, block_size: int | None = None, progress: Progress = None,
                    cancel: Cancel = None) -> Iterator[tuple[object, np.ndarray]]:
        """Yield (window, (K, h, w) float32 block, NaN = nodata) over tile-aligned windows of `block_size` (default:
        as large as a memory budget allows). Every block is a view of one reused buffer: use it before asking for
        the next (copy it to keep it)."""
        windows = self.windows(block_size or default_block_size(self))
        buffer = np.empty(self.dims * max(int(w.height) * int(w.width) for w in windows), np.float32)
        for window in walk(windows, progress, cancel, f"reading {self.path.name}"):
            yield window, self.read_block(window, buffer)

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """Map (N, D) model-space vectors into this raster's space: through the PCA sidecar, identity at full dims.

        Vectors already in this raster's K-dim space pass through unchanged.
        """
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if self.pca is not None and vectors.shape[1] == self.pca.input_dims:
            return self.pca.transform(vectors)
        if vectors.shape[1] == self.dims:
            return vectors
        raise GAIRError(f"vectors have {vectors.shape[1]} dims; {self.path.name} takes {self.meta.model_dims} "
                        f"(model) or {self.dims} (raster) dims")

    def close(self) -> None:
        self._ds.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sample_pixels(raster: EmbeddingRaster, count: int, seed: int = 0, cancel: Cancel = None,
                  progress: Progress = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` distinct random valid pixels (fewer if the raster has fewer): (vectors (n,K), rows (n,), cols (n,)).

    Two passes: a one-band pass counts valid pixels per tile, then only tiles holding chosen pixels are read.
    Deterministic for a given seed and raster.
    """
    windows = raster.windows()
    masks = [raster.read_valid_mask(window) for window in walk(windows, None, cancel, "sampling pixels")]
    counts = np.array([m.sum() for m in masks], dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        raise GAIRError(f"{raster.path.name} has no valid pixels to sample")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(total, size=min(int(count), total), replace=False))
    starts = np.concatenate([[0], np.cumsum(counts)])
    vectors, rows, cols = [], [], []
    for i, window in enumerate(walk(windows, progress, cancel, "sampling pixels")):
        lo, hi = np.searchsorted(chosen, [starts[i], starts[i + 1]])
        if hi > lo:
            flat = np.flatnonzero(masks[i].ravel())[chosen[lo:hi] - starts[i]]
            vectors.append(raster.read_pixels(window)[flat])
            rows.append(flat // int(window.width) + int(window.row_off))
            cols.append(flat % int(window.width) + int(window.col_off))
    vectors, rows, cols = np.concatenate(vectors), np.concatenate(rows), np.concatenate(cols)
    keep = np.isfinite(vectors).all(axis=1)
    return vectors[keep], rows[keep], cols[keep]


def default_block_size(raster: EmbeddingRaster, budget_bytes: int = 128 * 2**20) -> int:
    """Largest tile-multiple block whose float32 vectors fit `budget_bytes` (at least one tile)."""
    tile = raster.tile_shape[0]
    side = int(math.sqrt(budget_bytes / (4 * raster.dims)))
    return max(tile, side // tile * tile)
