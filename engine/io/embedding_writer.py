"""Writing embedding rasters: blocks to a tiled GeoTIFF, then its cloud-optimized copy moved into place.

The format itself (tags, nodata, encodings, overview levels) is defined in engine.io.embedding_raster, with the reader.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import numpy as np

from ..errors import GAIRError
from ..params import DTYPES
from .embedding_raster import (
    ENCODINGS,
    KIND_EMBEDDING,
    NODATA,
    TAG_CROP_GROUND_M,
    TAG_CROP_PIXELS,
    TAG_DIMS,
    TAG_ENCODING,
    TAG_KIND,
    TAG_MODEL_DIMS,
    TAG_PCA,
    band_names,
    overview_factors,
)
from .files import PAM, PendingFile, pca_sidecar_path
from .pca import PCAProjection
from .quantise import INT16_LIMIT, quantise_int8, quantise_int16
from .space import EmbeddingSpace


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
    A cloud-optimized GeoTIFF of 256 px tiles. compress="auto": int8 band-interleaved plain tiles (analysis reads them
    through mmap at ~40 Mpix/s for 64 dims; ZSTD would save ~25% but decode at ~10 Mpix/s on one core), float32/int16
    ZSTD level 1 with the floating-point / integer predictor (~20% smaller; QGIS 3.22's GDAL reads it; the COG driver
    of GDAL < 3.11 interleaves compressed tiles by pixel). Any GDAL codec name is accepted.
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
        tags = {**(extra_tags or {}), TAG_KIND: KIND_EMBEDDING, **self.space.tags(), TAG_ENCODING: ENCODINGS[dtype],
                TAG_CROP_PIXELS: "" if crop_pixels is None else str(int(crop_pixels)),
                TAG_CROP_GROUND_M: "" if crop_ground_m is None else repr(float(crop_ground_m)),
                TAG_DIMS: str(self.dims), TAG_MODEL_DIMS: str(pca.input_dims if pca else self.dims),
                TAG_PCA: pca_sidecar_path(self.path).name if pca else ""}
        # the staging file is plain (the COG copy compresses once); its disk use is the estimate's bytes
        self._cog_options = {"BLOCKSIZE": tile, "BIGTIFF": "IF_SAFER", "COMPRESS": (compress or "none").upper()}
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
