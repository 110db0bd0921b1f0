"""Evaluation harness: frozen-encoder linear probe and kNN with learning curves, as JSON + HTML reports.

    python -m engine evaluate --patches EuroSAT_MS/ --output eval/            # EuroSAT-format patch folders
    python -m engine evaluate --raster S2.tif --points labels.gpkg --class-field class --output eval/
    python -m engine evaluate --location --points labels.csv --output eval/   # CSP few-label protocol
"""
from __future__ import annotations

from .harness import evaluate, evaluate_location, evaluate_patches, evaluate_points
from .protocol import LEARNING_FRACTIONS, ProtocolConfig

__all__ = ["evaluate", "evaluate_patches", "evaluate_points", "evaluate_location", "ProtocolConfig",
           "LEARNING_FRACTIONS"]
