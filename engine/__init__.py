"""GAIR engine: model, pipelines and analysis on geo-aligned implicit embeddings. No QGIS import here.

Heavy modules load lazily so `import engine` is cheap and the ONNX path never imports torch.
"""
from __future__ import annotations

import importlib

from .config import S2_BANDS, GAIRConfig
from .errors import Cancelled, GAIRError

__version__ = "0.1.0"

_LAZY = {
    "GAIRModel": ".model",
    "load_model": ".runtime.loading",
    "save_bundle": ".model.checkpoint",
    "GAIRModelLike": ".runtime.protocol",
    "preprocess_rs": ".runtime.preprocess",
    "preprocess_sv": ".runtime.preprocess",
    "embed_raster": ".pipeline",
    "embed_rasters": ".pipeline",
    "embed_features": ".pipeline",
    "embed_photos": ".pipeline",
    "embed_locations": ".pipeline",
}

__all__ = ["GAIRConfig", "S2_BANDS", "Cancelled", "GAIRError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
