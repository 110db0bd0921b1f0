"""What people do with embeddings: clusters, similarity search, classifiers and regressors on embedding rasters
and per-feature embedding layers. Functions take paths and plain values plus progress/cancel callbacks and return
small dataclasses describing what they wrote; the CLI (engine.cli.analysis) and the QGIS plugin call exactly these.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "cluster_embeddings": "cluster", "ClusterResult": "cluster",
    "similarity_search": "similarity", "rank_features": "ranking", "SimilarityResult": "similarity",
    "SimilarityHit": "similarity", "RankResult": "ranking",
    "fewshot_search": "fewshot", "FewShotResult": "fewshot",
    "train_classifier": "classify", "apply_model": "classify", "TrainResult": "classify",
    "ApplyResult": "classify", "CLASSIFIERS": "classify",
    "train_regressor": "regress", "REGRESSORS": "regress",
    "read_class_names": "rasters",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
