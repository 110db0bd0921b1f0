"""GAIR engine: model, pipelines and analysis on geo-aligned implicit embeddings. No QGIS import here.

Heavy modules load lazily so `import engine` is cheap and the ONNX path never imports torch.
"""
from __future__ import annotations

import importlib

from .config import S2_BANDS, GAIRConfig
from .errors import Cancelled, GAIRError

__version__ = "0.1.0"

_LAZY = {
    "GAIRModel": "engine.model",
    "load_model": "engine.checkpoint",
    "save_bundle": "engine.checkpoint",
    "preprocess_rs": "engine.preprocess",
    "preprocess_sv": "engine.preprocess",
    "embed_raster": "engine.pipeline",
    "embed_points": "engine.pipeline",
    "embed_photos": "engine.pipeline",
    "embed_locations": "engine.pipeline",
}

__all__ = ["GAIRConfig", "S2_BANDS", "Cancelled", "GAIRError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
