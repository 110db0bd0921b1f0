"""Per-feature embedding layers: the input attributes plus `gair_000..` embedding fields, a `gair_status` field and a
one-row `gair_meta` table, written through the shared GeoPackage writer (engine.io.vectors).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .embedding_raster import BAND_PREFIX, band_names
from .vectors import META_TABLE, VectorLayer, write_gpkg

STATUS_FIELD = "gair_status"
_OWN_FIELD = re.compile(rf"^{BAND_PREFIX}(\d{{3,}}|status)$", re.IGNORECASE)


def embedding_columns(vectors: np.ndarray) -> dict[str, np.ndarray]:
    """(N, K) float vectors (NaN rows for failures) -> {gair_000: float64 column, ...}; NaN is written as null."""
    vectors = np.asarray(vectors, dtype=np.float64)
    return {name: np.ascontiguousarray(vectors[:, k]) for k, name in enumerate(band_names(vectors.shape[1]))}


def write_features(path: str | os.PathLike, layer: VectorLayer, vectors: np.ndarray, status: np.ndarray,
                   meta: dict[str, str], layer_name: str | None = None) -> Path:
    """GeoPackage = the layer's geometries and attributes (older gair fields replaced) + gair_### + gair_status.

    Written under a temp name in the destination folder and renamed at the end; `meta` goes into the layer
    metadata and the `gair_meta` table.
    """
    columns = {n: c for n, c in layer.fields.items() if not _OWN_FIELD.match(n)}
    columns.update(embedding_columns(vectors))
    columns[STATUS_FIELD] = np.asarray(status, dtype=object)
    spatial = layer.geometry_type is not None or any(g is not None for g in layer.geometries)
    return write_gpkg(path, layer.geometries if spatial else None, columns, layer.crs, layer=layer_name or layer.name,
                      layer_metadata=meta, geometry_type=(layer.geometry_type or "Unknown") if spatial else None,
                      tables={META_TABLE: {k: np.array([str(v)], dtype=object) for k, v in meta.items()}})

