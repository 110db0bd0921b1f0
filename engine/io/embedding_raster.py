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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from ..errors import GAIRError
from ..params import DTYPES
from .blocks import Cancel, Progress, block_windows, one_blas_thread, walk
from .files import PAM, PendingFile, pca_sidecar_path
from .pca import PCAProjection
from .quantise import INT8_LIMIT, INT8_NODATA, INT16_LIMIT, INT16_NODATA, quantise_int8, quantise_int16
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
    Band-interleaved tiles. compress="auto": int8 plain tiles (analysis reads them through mmap at ~40 Mpix/s for
    64 dims; ZSTD would save ~25% but decode at ~10 Mpix/s on one core), float32/int16 ZSTD level 1 with the
    floating-point / integer predictor (~20% smaller; QGIS 3.22's GDAL reads it). Any GDAL codec name is accepted.
    """

    def __init__(self, path: str | os.PathLike, *, width: int, height: int, crs, transform, dims: int, model: str,
                 query_mode: str = "nili", nili_convention: str = "released", options: dict | None = None,
                 crop_pixels: int | None = None, crop_ground_m: float | None = None, dtype: str = "float32",
                 pca: PCAProjection | None = None, scale: Sequence[float] | float | None = None,
                 offset: Sequence[float] | float | None = None, tile: int = 256, compress: str | None = "auto",
                 extra_tags: dict | None = None, overviews: bool = True) -> None:
        import rasterio

        if dtype not in DTYPES:
            raise GAIRError(f"embedding raster dtype must be one of {DTYPES}, got {dtype!r}")
        if pca is not None and pca.dims != dims:
            raise GAIRError(f"PCA has {pca.dims} dims but the raster {dims} bands")
        if crs is None:
            raise GAIRError("an embedding raster needs a CRS; give the CRS of the source imagery")
        self.path, self.dims, self.dtype, self.pca = Path(path), int(dims), dtype, pca
        self.tile, self.overviews = int(tile), bool(overviews)
        self.space = EmbeddingSpace(model, query_mode, nili_convention, pca.sha if pca else "", dict(options or {}))
        self.scale = self.offset = None
        if dtype == "int16":
            if scale is None:
                raise GAIRError("int16 embedding rasters need a scale (and offset); compute them with "
                                "engine.io.embedding_raster.int16_scale_offset(sample)")
            self.scale = np.broadcast_to(np.asarray(scale, np.float64), (dims,)).copy()
            self.offset = np.broadcast_to(np.asarray(0.0 if offset is None else offset, np.float64), (dims,)).copy()
        self._buffers: dict[str, np.ndarray] = {}
        # blocks go to a plain tiled GeoTIFF (GDAL's COG driver only copies); commit() rewrites it as a COG
        self._staging, self._pending = PendingFile(self.path), PendingFile(self.path, sidecars=(PAM,))
        profile = {"driver": "GTiff", "width": int(width), "height": int(height), "count": self.dims, "dtype": dtype,
                   "crs": crs, "transform": transform, "tiled": True, "blockxsize": tile, "blockysize": tile,
                   "interleave": "band", "BIGTIFF": "IF_SAFER", "nodata": NODATA[dtype]}
        if compress == "auto":
            compress = "none" if dtype == "int8" else "zstd"
        if compress not in (None, "none"):
            profile.update(compress=compress, predictor=3 if dtype == "float32" else 2)
            if compress == "zstd":
                profile["zstd_level"] = 1
        tags = {**(extra_tags or {}), TAG_KIND: KIND_EMBEDDING, **self.space.tags(), TAG_ENCODING: ENCODINGS[dtype],
                TAG_CROP_PIXELS: "" if crop_pixels is None else str(int(crop_pixels)),
                TAG_CROP_GROUND_M: "" if crop_ground_m is None else repr(float(crop_ground_m)),
                TAG_DIMS: str(self.dims), TAG_MODEL_DIMS: str(pca.input_dims if pca else self.dims),
                TAG_PCA: pca_sidecar_path(self.path).name if pca else ""}
        self._cog_options = {"BLOCKSIZE": tile, "INTERLEAVE": "BAND", "BIGTIFF": "IF_SAFER",
                             "COMPRESS": (compress or "none").upper()}
        if compress not in (None, "none"):
            self._cog_options["PREDICTOR"] = "FLOATING_POINT" if dtype == "float32" else "STANDARD"
            if compress == "zstd":
                self._cog_options["LEVEL"] = 1
        self._ds = rasterio.open(self._staging.tmp, "w", **profile)
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
            block = quantise_int16(block, self.offset, self.scale, self._buffer("raw", block.size, np.int16),
                                   self._buffer("scratch", block.size, np.float64))
        elif self.dtype == "int8":
            block = quantise_int8(block, self._buffer("raw", block.size, np.int8),
                                  self._buffer("scratch", block.size, np.float32))
        else:
            block = block.astype(np.float32, copy=False)
        self._ds.write(block, window=window)

    def _buffer(self, name: str, size: int, dtype) -> np.ndarray:
        """A flat reused array of at least `size` elements: blocks are encoded without fresh pages each time."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.size < size or buffer.dtype != dtype:
            buffer = self._buffers[name] = np.empty(size, dtype)
        return buffer

    def commit(self) -> Path:
        """Build the overviews, rewrite as a cloud-optimized GeoTIFF (IFDs, then overviews, then the full resolution:
        GDAL's COG driver, ~3 % of a run) and move into place (sidecar first, so a raster never exists without its
        PCA)."""
        import rasterio.shutil

        factors = overview_factors(self._ds.width, self._ds.height) if self.overviews else []
        try:
            if factors:
                from rasterio.enums import Resampling

                self._ds.build_overviews(factors, Resampling.nearest)
            self._ds.close()
            rasterio.shutil.copy(self._staging.tmp, self._pending.tmp, driver="COG", **self._cog_options,
                                 OVERVIEWS="FORCE_USE_EXISTING" if factors else "NONE")
        except BaseException:
            self.abort()
            raise
        finally:
            self._staging.abort()
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
        self._staging.abort()
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
