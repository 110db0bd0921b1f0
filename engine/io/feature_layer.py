"""Per-feature embedding layers: the input attributes plus `gair_000..` embedding fields, a `gair_status` field and a
one-row `gair_meta` table holding the same identity tags as an embedding raster (GAIR_KIND=embedding, the space's
parts, GAIR_MODALITY rs/sv/sv_aligned/location), written and read through engine.io.vectors.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import GAIRError
from .embedding_raster import BAND_PREFIX, KIND_EMBEDDING, TAG_DIMS, TAG_KIND, TAG_MODEL_DIMS, EmbeddingMeta, band_names
from .space import TAG_MODEL, EmbeddingSpace
from .vectors import META_TABLE, VectorLayer, read_layer, read_layer_metadata, write_gpkg

STATUS_FIELD = "gair_status"
TAG_MODALITY = "GAIR_MODALITY"
EMBEDDING_FIELD = re.compile(rf"^{BAND_PREFIX}\d{{3,}}$")
_OWN_FIELD = re.compile(rf"^{BAND_PREFIX}(\d{{3,}}|status)$", re.IGNORECASE)


def embedding_columns(vectors: np.ndarray) -> dict[str, np.ndarray]:
    """(N, K) float vectors (NaN rows for failures) -> {gair_000: float64 column, ...}; NaN is written as null."""
    vectors = np.asarray(vectors, dtype=np.float64)
    return {name: np.ascontiguousarray(vectors[:, k]) for k, name in enumerate(band_names(vectors.shape[1]))}


def embedding_tags(space: EmbeddingSpace, dims: int, model_dims: int, modality: str) -> dict[str, str]:
    """The identity a per-feature layer records (the same tags as an embedding raster, plus the modality)."""
    return {TAG_KIND: KIND_EMBEDDING, **space.tags(), TAG_DIMS: str(dims), TAG_MODEL_DIMS: str(model_dims),
            TAG_MODALITY: modality}


def write_features(path: str | os.PathLike, layer: VectorLayer, vectors: np.ndarray, status: np.ndarray,
                   meta: dict[str, str], layer_name: str | None = None) -> Path:
    """GeoPackage = the layer's geometries and attributes (older gair fields replaced) + gair_### + gair_status.

    `meta` (see `embedding_tags`) goes into the layer metadata and the `gair_meta` table.
    """
    columns = {n: c for n, c in layer.fields.items() if not _OWN_FIELD.match(n)}
    columns.update(embedding_columns(vectors))
    if status is not None:
        columns[STATUS_FIELD] = np.asarray(status, dtype=object)
    spatial = layer.geometry_type is not None or any(g is not None for g in layer.geometries)
    return write_gpkg(path, layer.geometries if spatial else None, columns, layer.crs, layer=layer_name or layer.name,
                      layer_metadata=meta, geometry_type=(layer.geometry_type or "Unknown") if spatial else None,
                      tables={META_TABLE: {k: np.array([str(v)], dtype=object) for k, v in meta.items()}})


def embedding_vectors(layer: VectorLayer) -> np.ndarray | None:
    """(N, K) float32 from the layer's `gair_###` fields in index order; None when it has none."""
    names = sorted((n for n in layer.fields if EMBEDDING_FIELD.match(n)), key=lambda n: int(n[len(BAND_PREFIX):]))
    if not names:
        return None
    return np.column_stack([layer.fields[n].astype(np.float32) for n in names])


def layer_embedding_meta(layer: VectorLayer, dims: int) -> EmbeddingMeta:
    """The identity stored with a per-feature layer; an error when it has none (e.g. a GeoJSON copy)."""
    values = read_layer_metadata(layer.path, layer.name)
    if TAG_MODEL not in values:
        raise GAIRError(f"{layer.path.name} has embedding fields but no {TAG_MODEL} metadata, so the space of its "
                        "vectors is unknown; re-create it with the engine's embed commands (as a GeoPackage)")
    space = EmbeddingSpace.from_tags(values, layer.path.name)
    return EmbeddingMeta(space=space, dims=dims, model_dims=int(values.get(TAG_MODEL_DIMS) or dims))


def read_embedding_layer(path: str | os.PathLike, layer: str | int | None = None
                         ) -> tuple[VectorLayer, np.ndarray, EmbeddingMeta]:
    """A per-feature embedding layer: its features, their (N, K) `gair_###` vectors, and the space they live in."""
    data = read_layer(path, layer, require_crs=False)
    vectors = embedding_vectors(data)
    if vectors is None:
        raise GAIRError(f"{Path(path).name} has no {BAND_PREFIX}000.. fields; it is not a per-feature embedding "
                        "layer (make one with the engine's embed commands)")
    return data, vectors, layer_embedding_meta(data, vectors.shape[1])
