"""The embedding raster format: one GeoTIFF band per embedding dimension, tagged with the vector space it lives in.

Writers (the pipeline) and readers (analysis, plugin) share this module so the tags, nodata rules, int16 scaling
and PCA sidecar are defined once. See docs/ENGINE_API.md, "Embedding raster format".
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from ..errors import Cancelled, GAIRError
from .files import temp_path_for  # noqa: F401 (used by writers across the engine)
from .pca import PCAProjection, sidecar_path  # noqa: F401 (part of this format's API)

BAND_PREFIX = "gair_"
INT16_NODATA = -32768
INT16_LIMIT = 32767
DTYPES = ("float32", "int16")
TAG_MODEL, TAG_SPACE, TAG_QUERY_MODE = "GAIR_MODEL", "GAIR_SPACE", "GAIR_QUERY_MODE"
TAG_CROP_PIXELS, TAG_CROP_GROUND_M = "GAIR_CROP_PIXELS", "GAIR_CROP_GROUND_M"
TAG_DIMS, TAG_PCA = "GAIR_DIMS", "GAIR_PCA"
TAG_MODEL_DIMS = "GAIR_MODEL_DIMS"  # dims of the model's own space (differs from GAIR_DIMS after PCA)

Progress = Callable[[float], None] | None
Cancel = Callable[[], bool] | None


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
                 query_mode: str = "nili", crop_pixels: int | None = None, crop_ground_m: float | None = None,
                 dtype: str = "float32", pca: PCAProjection | None = None, scale: Sequence[float] | float | None = None,
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
        self.scale = self.offset = None
        if dtype == "int16":
            if scale is None:
                raise GAIRError("int16 embedding rasters need a scale (and offset); compute them with "
                                "engine.io.embedding_raster.int16_scale_offset(sample)")
            self.scale = np.broadcast_to(np.asarray(scale, np.float64), (dims,)).copy()
            self.offset = np.broadcast_to(np.asarray(0.0 if offset is None else offset, np.float64), (dims,)).copy()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temp_path_for(self.path)
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
        tags = {"GAIR_KIND": "embedding", TAG_MODEL: model, TAG_SPACE: pca.space if pca else model,
                TAG_QUERY_MODE: query_mode,
                TAG_CROP_PIXELS: "" if crop_pixels is None else str(int(crop_pixels)),
                TAG_CROP_GROUND_M: "" if crop_ground_m is None else repr(float(crop_ground_m)),
                TAG_DIMS: str(self.dims), TAG_MODEL_DIMS: str(pca.input_dims if pca else self.dims),
                TAG_PCA: sidecar_path(self.path).name if pca else "", **(extra_tags or {})}
        self._ds = rasterio.open(self._tmp, "w", **profile)
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
                self.pca.save(sidecar_path(self.path))
            os.replace(self._tmp, self.path)
        finally:
            self._cleanup()
        return self.path

    def abort(self) -> None:
        if not self._ds.closed:
            self._ds.close()
        self._cleanup()

    def _cleanup(self) -> None:
        self._tmp.unlink(missing_ok=True)
        Path(str(self._tmp) + ".aux.xml").unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def create_embedding_raster(path: str | os.PathLike, **kwargs) -> EmbeddingRasterWriter:
    """Same as `EmbeddingRasterWriter(path, **kwargs)`."""
    return EmbeddingRasterWriter(path, **kwargs)


@dataclass(frozen=True)
class EmbeddingMeta:
    """Identity of the vectors in a raster or layer: which model, which (possibly reduced) space."""

    model: str
    space: str
    dims: int
    model_dims: int
    query_mode: str = ""
    crop_pixels: int | None = None
    crop_ground_m: float | None = None
    pca: str = ""


class EmbeddingRaster:
    """An open embedding raster: metadata plus float32 block reads with NaN for nodata."""

    def __init__(self, path: str | os.PathLike) -> None:
        import rasterio

        self.path = Path(path)
        if not self.path.is_file():
            raise GAIRError(f"embedding raster {self.path} does not exist")
        with rasterio.Env(GTIFF_VIRTUAL_MEM_IO="IF_ENOUGH_RAM"):  # uncompressed tiles via mmap: ~2x faster reads
            self._ds = rasterio.open(self.path)
        try:
            self.meta = self._read_meta()
            self.pca = PCAProjection.load(self.path.with_name(self.meta.pca)) if self.meta.pca else None
        except Exception:
            self._ds.close()
            raise
        self.int16 = self._ds.dtypes[0] == "int16"
        self._scale = np.asarray(self._ds.scales, np.float32)[:, None, None]
        self._offset = np.asarray(self._ds.offsets, np.float32)[:, None, None]

    @classmethod
    def open(cls, path: str | os.PathLike) -> EmbeddingRaster:
        return cls(path)

    def _read_meta(self) -> EmbeddingMeta:
        tags = self._ds.tags()
        if TAG_MODEL not in tags or TAG_SPACE not in tags:
            raise GAIRError(f"{self.path} is not a GAIR embedding raster (no {TAG_MODEL}/{TAG_SPACE} tags); "
                            "make one with `python -m engine embed-raster`")
        dims = self._ds.count
        if tags.get(TAG_DIMS) and int(tags[TAG_DIMS]) != dims:
            raise GAIRError(f"{self.path} says {tags[TAG_DIMS]} dims but has {dims} bands; the file is damaged")
        crop_px, crop_m = tags.get(TAG_CROP_PIXELS, ""), tags.get(TAG_CROP_GROUND_M, "")
        return EmbeddingMeta(model=tags[TAG_MODEL], space=tags[TAG_SPACE], dims=dims,
                             model_dims=int(tags.get(TAG_MODEL_DIMS) or dims), query_mode=tags.get(TAG_QUERY_MODE, ""),
                             crop_pixels=int(crop_px) if crop_px else None,
                             crop_ground_m=float(crop_m) if crop_m else None, pca=tags.get(TAG_PCA, ""))

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
        from rasterio.windows import Window

        th, tw = self.tile_shape
        bh = max(th, (block_size or th) // th * th)
        bw = max(tw, (block_size or tw) // tw * tw)
        return [Window(c, r, min(bw, self.width - c), min(bh, self.height - r))
                for r in range(0, self.height, bh) for c in range(0, self.width, bw)]

    # -- reading -------------------------------------------------------------------------------------------------
    def read_block(self, window, buffer: np.ndarray | None = None) -> np.ndarray:
        """(K, h, w) float32, NaN where nodata; int16 rasters are unscaled with their GDAL scale/offset.

        `buffer`: optional 1-D float32 scratch of >= K*h*w elements; the result is then a view of it (scans reuse
        one buffer instead of page-faulting a fresh array per block, ~1.5x faster reads).
        """
        shape = (self.dims, int(window.height), int(window.width))
        size = shape[0] * shape[1] * shape[2]
        out = np.empty(shape, np.float32) if buffer is None else buffer[:size].reshape(shape)
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
        band = self._ds.read(1, window=window)
        return band != INT16_NODATA if self.int16 else np.isfinite(band)

    def iter_blocks(self, block_size: int | None = None, progress: Progress = None,
                    cancel: Cancel = None) -> Iterator[tuple[object, np.ndarray]]:
        """Yield (window, (K, h, w) float32) over tile-aligned windows."""
        windows = self.windows(block_size)
        for i, window in enumerate(windows):
            if cancel is not None and cancel():
                raise Cancelled("cancelled while reading the embedding raster")
            yield window, self.read_block(window)
            if progress is not None:
                progress((i + 1) / len(windows))

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


def _space_of(item) -> tuple[str, str]:
    if isinstance(item, EmbeddingRaster):
        return item.meta.space, item.path.name
    if isinstance(item, EmbeddingMeta):
        return item.space, "layer"
    return str(item), str(item)


def check_same_space(a, b) -> None:
    """Raise GAIRError unless a and b (EmbeddingRaster, EmbeddingMeta or space id) share one vector space."""
    (space_a, name_a), (space_b, name_b) = _space_of(a), _space_of(b)
    if space_a != space_b:
        raise GAIRError(f"{name_a} (space {space_a}) and {name_b} (space {space_b}) are different embedding spaces; "
                        "embed both with the same model (and the same PCA sidecar) before comparing them")


def sample_pixels(raster: EmbeddingRaster, count: int, seed: int = 0, cancel: Cancel = None,
                  progress: Progress = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` distinct random valid pixels (fewer if the raster has fewer): (vectors (n,K), rows (n,), cols (n,)).

    Two passes: a one-band pass counts valid pixels per tile, then only tiles holding chosen pixels are read.
    Deterministic for a given seed and raster.
    """
    windows = raster.windows()
    masks = []
    for window in windows:
        if cancel is not None and cancel():
            raise Cancelled("cancelled while sampling pixels")
        masks.append(raster.read_valid_mask(window))
    counts = np.array([m.sum() for m in masks], dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        raise GAIRError(f"{raster.path.name} has no valid pixels to sample")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(total, size=min(int(count), total), replace=False))
    starts = np.concatenate([[0], np.cumsum(counts)])
    vectors, rows, cols = [], [], []
    for i, (window, mask) in enumerate(zip(windows, masks)):
        lo, hi = np.searchsorted(chosen, [starts[i], starts[i + 1]])
        if hi > lo:
            if cancel is not None and cancel():
                raise Cancelled("cancelled while sampling pixels")
            flat = np.flatnonzero(mask.ravel())[chosen[lo:hi] - starts[i]]
            vectors.append(raster.read_pixels(window)[flat])
            rows.append(flat // int(window.width) + int(window.row_off))
            cols.append(flat % int(window.width) + int(window.col_off))
        if progress is not None:
            progress((i + 1) / len(windows))
    vectors, rows, cols = np.concatenate(vectors), np.concatenate(rows), np.concatenate(cols)
    keep = np.isfinite(vectors).all(axis=1)
    return vectors[keep], rows[keep], cols[keep]


def default_block_size(raster: EmbeddingRaster, budget_bytes: int = 128 * 2**20) -> int:
    """Largest tile-multiple block whose float32 vectors fit `budget_bytes` (at least one tile)."""
    tile = raster.tile_shape[0]
    side = int(math.sqrt(budget_bytes / (4 * raster.dims)))
    return max(tile, side // tile * tile)
