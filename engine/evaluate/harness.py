"""`evaluate`: frozen-encoder linear probe and kNN on EuroSAT-format patches, on labelled points of a raster (query
modes side by side) and, for location encoders, CSP's few-label protocol; each writes report.json + report.html.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable

import numpy as np

from ..errors import GAIRError
from .location import LOCATION_RATIOS, gains, location_methods, lonlat_metres, read_labelled_points
from .patches import find_patches, patch_features
from .points import POINT_MODES, point_features
from .protocol import ProtocolConfig, evaluate_features, feature_classifiers
from .report import write_report

Progress = Callable[[float], None] | None
Cancel = Callable[[], bool] | None
METHOD_LABELS = {"mean": "crop_mean"}  # report name of each feature mode


def _classifier_names(config: ProtocolConfig) -> dict[str, str]:
    return {"linear": "linear probe: standardised features, logistic regression (L2, C=1)",
            "knn": f"kNN: k={config.knn_k} nearest neighbours by cosine distance, majority vote (k lowered to the "
                   "smallest class count of a training subset)",
            "finetune": "fine-tuned: encoder + linear head trained end to end (cross-entropy, Adam)"}


def _base_report(task: str, model, labels: np.ndarray, config: ProtocolConfig, methods: list[str]) -> dict:
    counts = Counter(labels.tolist())
    return {"task": task, "model": getattr(model, "fingerprint", ""), "n_samples": int(len(labels)),
            "classes": sorted(counts), "class_counts": dict(sorted(counts.items())),
            "chance": max(counts.values()) / len(labels), "method_names": methods,
            "classifiers": _classifier_names(config), "protocol": config.to_dict()}


def _finish(report: dict, output_dir, started: float) -> dict:
    report["seconds"] = round(time.perf_counter() - started, 2)
    json_path, html_path = write_report(report, output_dir)
    report["paths"] = {"json": str(json_path), "html": str(html_path)}
    return report


def _stage(progress: Progress, lo: float, hi: float) -> Progress:
    if progress is None:
        return None
    return lambda f: progress(lo + (hi - lo) * min(1.0, max(0.0, f)))


def _model(model):
    from ..pipeline.raster import as_model

    return as_model(model)


def evaluate_patches(patch_dir: str | os.PathLike, output_dir: str | os.PathLike, model=None, *,
                     modes: tuple[str, ...] = ("mean", "nili"), band_order=None,
                     config: ProtocolConfig | None = None, batch_size: int = 32, progress: Progress = None,
                     cancel: Cancel = None) -> dict:
    """Probe crop means (and centre queries) of a EuroSAT-format folder; returns the report dict."""
    started = time.perf_counter()
    config = config or ProtocolConfig()
    bad = [m for m in modes if m not in POINT_MODES]
    if bad or not modes:
        raise GAIRError(f"patch features must be among {', '.join(POINT_MODES)}, got {', '.join(modes) or 'none'}")
    model = _model(model)
    paths, labels, classes = find_patches(patch_dir)
    features, coords = patch_features(model, paths, modes, band_order, batch_size, _stage(progress, 0, 0.6), cancel)
    if "blocks" in config.splits and coords is None:
        raise GAIRError("the spatial-block split needs georeferenced patches; some have no CRS. Use --split random")
    names = [METHOD_LABELS.get(m, f"{m}_centre") for m in modes]
    methods = {n: feature_classifiers(features[m], config.knn_k) for n, m in zip(names, modes)}
    report = _base_report("patches", model, labels, config, names)
    report.update(source=str(patch_dir), band_order=list(band_order or []) or "EuroSAT-MS (B8A last)",
                  description="Frozen-encoder features of each patch: crop_mean = mean of the tokens (the crop "
                              "embedding); *_centre = the query at the patch centre. Patches are resized to the "
                              "model input like any crop, so a 64-pixel patch is seen larger than a pretraining "
                              "crop (224 pixels).")
    report["results"] = evaluate_features(methods, labels, config, coords, _stage(progress, 0.6, 1.0), cancel)
    return _finish(report, output_dir, started)


def evaluate_points(raster: str | os.PathLike, points: str | os.PathLike, output_dir: str | os.PathLike,
                    model=None, *, class_field: str = "class", modes: tuple[str, ...] = POINT_MODES, bands=None,
                    config: ProtocolConfig | None = None, batch_size: int | None = None,
                    progress: Progress = None, cancel: Cancel = None) -> dict:
    """Probe localized embeddings at labelled points, one feature set per query mode; returns the report dict."""
    started = time.perf_counter()
    config = config or ProtocolConfig()
    model = _model(model)
    features, labels, coords, skipped = point_features(model, raster, points, class_field, modes, bands,
                                                       batch_size, _stage(progress, 0, 0.6), cancel)
    names = [METHOD_LABELS.get(m, m) for m in modes]
    methods = {n: feature_classifiers(features[m], config.knn_k) for n, m in zip(names, modes)}
    report = _base_report("points", model, labels, config, names)
    report.update(raster=str(raster), points=str(points), class_field=class_field, skipped=skipped,
                  description="Embeddings at each labelled point of crops centred on it (the engine's embed-points "
                              "pipeline): NILI, bilinear and bicubic queries, and the crop mean as the baseline.")
    report["results"] = evaluate_features(methods, labels, config, coords, _stage(progress, 0.6, 1.0), cancel)
    return _finish(report, output_dir, started)


def evaluate_location(points: str | os.PathLike, output_dir: str | os.PathLike, model=None, *,
                      class_field: str = "label", encoder: str = "gair", method: str = "probe", gridcell=None,
                      config: ProtocolConfig | None = None, epochs: int = 100, lr: float = 1e-3,
                      progress: Progress = None, cancel: Cancel = None) -> dict:
    """CSP's few-label protocol: location-only classifiers, pretrained vs randomly initialised encoder."""
    started = time.perf_counter()
    config = config or ProtocolConfig(fractions=LOCATION_RATIOS)
    model = _model(model) if encoder == "gair" else model
    lonlat, labels = read_labelled_points(points, class_field)
    methods = location_methods(model, lonlat, encoder, method, gridcell, config.knn_k, epochs, lr, config.seed)
    report = _base_report("location", model, labels, config, list(methods))
    report.update(points=str(points), class_field=class_field, encoder=encoder, method=method,
                  description=f"Location-only classification from lon/lat ({encoder} location encoder, {method}): "
                              "the pretrained encoder against the same architecture randomly initialised; gain = "
                              "pretrained minus random accuracy at each label ratio.")
    if method == "finetune":
        report["finetune"] = {"epochs": epochs, "lr": lr, "optimizer": "Adam, full batch"}
    coords = lonlat_metres(lonlat) if "blocks" in config.splits else None
    report["results"] = evaluate_features(methods, labels, config, coords, progress, cancel)
    report["gain"] = gains(report["results"])
    return _finish(report, output_dir, started)


def evaluate(output_dir: str | os.PathLike, model=None, *, patches=None, raster=None, points=None,
             location: bool = False, **options) -> dict:
    """One entry point: `patches` (EuroSAT folder), `raster` + `points` (labelled points), or `location=True` +
    `points` (location encoder protocol). Options go to evaluate_patches / evaluate_points / evaluate_location."""
    if patches is not None and (raster is not None or location):
        raise GAIRError("give one evaluation at a time: --patches, --raster with --points, or --location")
    if location:
        if points is None:
            raise GAIRError("the location protocol needs labelled points (--points)")
        return evaluate_location(points, output_dir, model, **options)
    if patches is not None:
        return evaluate_patches(patches, output_dir, model, **options)
    if raster is not None and points is not None:
        return evaluate_points(raster, points, output_dir, model, **options)
    raise GAIRError("say what to evaluate: --patches DIR (EuroSAT layout), --raster R --points P (labelled points), "
                    "or --location --points P (location encoder)")


__all__ = ["evaluate", "evaluate_patches", "evaluate_points", "evaluate_location"]
