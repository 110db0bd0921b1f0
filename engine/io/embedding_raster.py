"""The embedding raster format: one GeoTIFF band per embedding dimension, tagged with the vector space it lives in.

Writers (the pipeline) and readers (analysis, plugin) share this module so the tags, nodata rules, int8/int16
encodings and PCA sidecar are defined once. See docs/ENGINE_API.md, "Embedding raster format".

Encodings (tag GAIR_ENCODING): float32 (NaN nodata), int16 (per-band GDAL scale/offset, -32768 nodata) and int8
(each pixel's vector scaled to unit length, then x127 and rounded; -128 nodata: the convention of the Satellite
Embedding and TESSERA products). Readers dequantise to float32: int8 gives unit vectors (the length is not kept).
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Self

import numpy as np

from ..errors import GAIRError
from ..params import DTYPES
from .blocks import Cancel, Progress, block_windows, one_blas_thread, walk
from .files import pca_sidecar_path
from .pca import PCAProjection
from .quantise import INT8_LIMIT, INT8_NODATA, INT16_NODATA
from .read_errors import check_readable_file, raster_read_errors
from .space import EmbeddingSpace

BAND_PREFIX = "gair_"
NODATA = {"float32": float("nan"), "int16": INT16_NODATA, "int8": INT8_NODATA}
TAG_ENCODING = "GAIR_ENCODING"
ENCODINGS = {"float32": "float32", "int16": "int16_band_scaled", "int8": "int8_unit"}
# What a GAIR raster is: embedding rasters hold vectors; derived rasters (analysis outputs) hold one value per pixel.
TAG_KIND = "GAIR_KIND"
KIND_EMBEDDING = "embedding"
DERIVED_KINDS = ("classes", "confidence", "similarity", "mask", "prediction", "change")
TAG_CROP_PIXELS, TAG_CROP_GROUND_M = "GAIR_CROP_PIXELS", "GAIR_CROP_GROUND_M"
TAG_DIMS, TAG_PCA = "GAIR_DIMS", "GAIR_PCA"
TAG_MODEL_DIMS = "GAIR_MODEL_DIMS"  # dims of the model's own space (differs from GAIR_DIMS after PCA)
# Internal overviews (nearest: every overview pixel is a stored vector, never a blend of neighbours) for rasters of at
# least a megapixel, levels whose short side keeps >= 64 px: the map tool's first heatmap of a whole tile reads one
# (~1/16 or 1/256 of the pixels) in well under a second; +6.7 % file size.
OVERVIEW_FACTORS, OVERVIEW_MIN_PIXELS, OVERVIEW_MIN_SIDE = (4, 16, 64), 2**20, 64


def band_names(dims: int) -> list[str]:
    return [f"{BAND_PREFIX}{i:03d}" for i in range(dims)]


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
    """An open embedding raster: metadata plus float32 block reads with NaN for nodata (any encoding), and raw
    block reads in the stored type for the scans, which dequantise cache-sized column chunks (`to_float`).

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
        self.dtype = self._ds.dtypes[0]
        # GDAL before 3.7 has no Int8 type and writes/reads signed bytes as Byte (PIXELTYPE=SIGNEDBYTE): same bytes
        self._signed_bytes = self.dtype == "uint8" and self._ds.tags().get(TAG_ENCODING) == ENCODINGS["int8"]
        if self._signed_bytes:
            self.dtype = "int8"
        if self.dtype not in DTYPES:
            self._ds.close()
            raise GAIRError(f"{self.path.name} stores {self.dtype} values; embedding rasters are {' / '.join(DTYPES)}")
        self.int16 = self.dtype == "int16"
        self._scale = np.asarray(self._ds.scales, np.float32)[:, None]
        self._offset = np.asarray(self._ds.offsets, np.float32)[:, None]

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
    def read_raw(self, window, buffer: np.ndarray | None = None, shape: tuple[int, int] | None = None) -> np.ndarray:
        """(K, h, w) in the stored type (float32, int16 or int8), as in the file; `to_float` makes floats of it.

        `buffer`: optional 1-D scratch of the stored type and >= K*h*w elements; the result is then a view of it
        (scans reuse one buffer instead of page-faulting a fresh array per block, ~1.5x faster reads).
        `shape`: (h, w) smaller than the window: a decimated read (nearest pixel, from the overviews when there are).
        """
        shape = (self.dims, *((int(window.height), int(window.width)) if shape is None else map(int, shape)))
        size = shape[0] * shape[1] * shape[2]
        out = np.empty(shape, self.dtype) if buffer is None else buffer[:size].reshape(shape)
        with raster_read_errors(self.path):
            self._ds.read(window=window, out=out.view(np.uint8) if self._signed_bytes else out)  # nearest by default
        return out

    def overview_factors(self) -> list[int]:
        """Decimation factors of the overviews stored in the file (empty: none)."""
        return list(self._ds.overviews(1))

    def to_float(self, raw: np.ndarray, out: np.ndarray | None = None, unit: bool = True) -> np.ndarray:
        """(K, n) raw columns -> (K, n) float32 with NaN columns for nodata: int16 through the per-band scale and
        offset, int8 to unit vectors (unit=False: the stored x127 values, for scale-free uses such as cosine).
        float32 is returned as it is (no copy). `out`: optional (K, >= n) float32 scratch."""
        if self.dtype == "float32":
            return raw
        n = raw.shape[1]
        out = np.empty(raw.shape, np.float32) if out is None else out[:, :n]
        if self.int16:
            np.multiply(raw, self._scale, out=out)
            out += self._offset
            out[:, (raw == INT16_NODATA).any(axis=0)] = np.nan
        else:
            if unit:
                np.multiply(raw, np.float32(1 / INT8_LIMIT), out=out)
            else:
                np.copyto(out, raw, casting="unsafe")
            nodata = raw[0] == INT8_NODATA
            if nodata.any():
                out[:, nodata] = np.nan
        return out

    def read_block(self, window, buffer: np.ndarray | None = None) -> np.ndarray:
        """(K, h, w) float32, NaN where nodata; int16/int8 rasters are dequantised (see `to_float`)."""
        if self.dtype == "float32":
            return self.read_raw(window, buffer)
        raw = self.read_raw(window)
        out = None if buffer is None else buffer[:raw.size].reshape(self.dims, -1)
        return self.to_float(raw.reshape(self.dims, -1), out).reshape(raw.shape)

    def read_pixels(self, window) -> np.ndarray:
        """(h*w, K) C-contiguous float32, pixel-major (the layout scikit-learn wants), NaN rows for nodata.

        Reads band-major and transposes in numpy: GDAL's own pixel-interleaved copy is several times slower.
        """
        return np.ascontiguousarray(self.read_block(window).reshape(self.dims, -1).T)

    def read_columns(self, window, flat: np.ndarray) -> np.ndarray:
        """(len(flat), K) float32 vectors of the window's pixels at row-major indices `flat` (NaN rows for nodata):
        only those pixels are dequantised and transposed, not the whole window."""
        raw = self.read_raw(window).reshape(self.dims, -1)
        return np.ascontiguousarray(self.to_float(np.ascontiguousarray(raw[:, flat])).T)

    def read_valid_mask(self, window) -> np.ndarray:
        """(h, w) bool from the first band only: cheap, and nodata is written across all bands."""
        with raster_read_errors(self.path):
            band = self._ds.read(1, window=window)
        band = band.view(np.int8) if self._signed_bytes else band
        return np.isfinite(band) if self.dtype == "float32" else band != NODATA[self.dtype]

    def iter_blocks(self, block_size: int | None = None, progress: Progress = None,
                    cancel: Cancel = None, raw: bool = False) -> Iterator[tuple[object, np.ndarray]]:
        """Yield (window, (K, h, w) float32 block, NaN = nodata) over tile-aligned windows of `block_size` (default:
        as large as a memory budget allows). raw=True yields the stored values instead (see `read_raw`; the hot
        scans convert them chunk by chunk with `to_float`). Every block is a view of one reused buffer: use it
        before asking for the next (copy it to keep it). BLAS runs on one thread until the walk ends (see
        `one_blas_thread`): the per-block products are memory-bound."""
        windows = self.windows(block_size or default_block_size(self))
        dtype = self.dtype if raw else np.float32
        buffer = np.empty(self.dims * max(int(w.height) * int(w.width) for w in windows), dtype)
        with one_blas_thread():
            for window in walk(windows, progress, cancel, f"reading {self.path.name}"):
                yield window, (self.read_raw(window, buffer) if raw else self.read_block(window, buffer))

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
            vectors.append(raster.read_columns(window, flat))
            rows.append(flat // int(window.width) + int(window.row_off))
            cols.append(flat % int(window.width) + int(window.col_off))
    vectors, rows, cols = np.concatenate(vectors), np.concatenate(rows), np.concatenate(cols)
    keep = np.isfinite(vectors).all(axis=1)
    return vectors[keep], rows[keep], cols[keep]


def overview_factors(width: int, height: int) -> list[int]:
    """The overview levels an embedding raster of this size gets (see OVERVIEW_FACTORS)."""
    if width * height < OVERVIEW_MIN_PIXELS:
        return []
    return [f for f in OVERVIEW_FACTORS if min(width, height) // f >= OVERVIEW_MIN_SIDE]


def default_block_size(raster: EmbeddingRaster, budget_bytes: int = 128 * 2**20) -> int:
    """Largest tile-multiple block whose float32 vectors fit `budget_bytes` (at least one tile)."""
    tile = raster.tile_shape[0]
    side = int(math.sqrt(budget_bytes / (4 * raster.dims)))
    return max(tile, side // tile * tile)
