"""Ranking the features of a per-feature embedding layer by cosine similarity to some of them (or to another layer
of the same space): the vector-layer side of similarity search, with the same query and scan."""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GAIRError
from ..io.feature_layer import read_embedding_layer
from ..io.guard import guarded
from ..io.space import check_same_space
from ..io.vectors import META_TABLE, read_layer_metadata, write_gpkg
from .similarity import cosine_scan, query_matrix


@dataclass
class RankResult:
    path: Path
    references: int
    ranking: list[tuple[int, float]]  # (fid, score), best first


@guarded
def rank_features(layer_path: str | os.PathLike, out_path: str | os.PathLike, *,
                  reference_fids: Sequence[int] | None = None, reference_layer: str | os.PathLike | None = None,
                  aggregate: str = "mean", layer: str | None = None, reference_layer_name: str | None = None,
                  progress: Callable[[float], None] | None = None) -> RankResult:
    """Rank the features of a per-feature embedding layer by cosine similarity to some of its own features
    (`reference_fids`) or to another embedding layer's features in the same space; writes a GeoPackage with
    `similarity` and `sim_rank` fields, best first."""
    data, vectors, meta = read_embedding_layer(layer_path, layer)
    refs = []
    if reference_fids:
        missing = sorted(set(reference_fids) - set(data.fids.tolist()))
        if missing:
            raise GAIRError(f"feature ids {missing} are not in {Path(layer_path).name}")
        refs.append(vectors[np.isin(data.fids, list(reference_fids))])
    if reference_layer is not None:
        _, ref_vectors, ref_meta = read_embedding_layer(reference_layer, reference_layer_name)
        check_same_space(meta, ref_meta, (Path(layer_path).name, Path(reference_layer).name))
        if ref_vectors.shape[1] != vectors.shape[1]:
            raise GAIRError(f"reference vectors have {ref_vectors.shape[1]} dims, the layer {vectors.shape[1]}; "
                            "they come from different embedding spaces")
        refs.append(ref_vectors)
    if not refs:
        raise GAIRError("give reference feature ids or a reference embedding layer")
    query = query_matrix(np.concatenate(refs), aggregate)
    valid = np.isfinite(vectors).all(axis=1)
    scores = np.full(len(vectors), np.nan, np.float32)
    scores[valid] = cosine_scan(np.ascontiguousarray(vectors[valid].T), query)
    order = np.argsort(np.where(valid, -scores, np.inf), kind="stable")
    ranks = np.empty(len(order), np.int32)
    ranks[order] = np.arange(1, len(order) + 1)
    fields = {name: values[order] for name, values in data.fields.items()}
    fields.update(similarity=scores[order].astype(np.float64), sim_rank=ranks[order])
    metadata = read_layer_metadata(data.path, data.name)  # still an embedding layer of the same space
    write_gpkg(out_path, data.geometries[order], fields, data.crs, layer=Path(out_path).stem,
               layer_metadata=metadata, tables={META_TABLE: {k: np.array([v], dtype=object)
                                                             for k, v in metadata.items()}})
    if progress is not None:
        progress(1.0)
    ranking = [(int(data.fids[i]), float(scores[i])) for i in order if valid[i]]
    return RankResult(Path(out_path), sum(len(r) for r in refs), ranking)
