"""One Processing algorithm per module; `algorithm_classes()` lists them in toolbox order."""
from __future__ import annotations

import importlib

MODULES = (
    "embed_raster",
    "embed_rasters",
    "embed_features",
    "embed_photos",
    "embed_locations",
    "cluster_embeddings",
    "similarity_search",
    "search_by_photo",
    "search_by_location",
    "change",
    "train_classifier",
    "apply_model",
    "classify_location",
    "train_regressor",
    "convert_checkpoint",
    "export_onnx",
)


def algorithm_classes() -> list[type]:
    """Every algorithm class; each module exposes exactly one `Algorithm`."""
    return [importlib.import_module(f"{__name__}.{module}").Algorithm for module in MODULES]
