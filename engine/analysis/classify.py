"""Supervised classes from labelled points/polygons: cross-validated report, saved model, class + confidence rasters."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import GAIRError
from ..io.embedding_raster import EmbeddingRaster
from ..io.guard import guarded
from ..params import CLASSIFIERS
from .rasters import CLASS_NODATA, OutputRaster, all_or_nothing, check_cancel, stage
from .report import classification_report, classification_scores, write_report
from .sampling import (
    check_class_counts,
    check_model_matches,
    load_model_file,
    save_model_file,
    sorted_classes,
    training_data,
)
from .validation import defend_estimates

APPLY_CHUNK = 16384  # pixels per scikit-learn call when applying a model: stays in cache, few calls per block


@dataclass
class TrainResult:
    model_path: Path
    report: dict
    report_paths: list[Path] = field(default_factory=list)
    samples: int = 0
    features: int = 0
    skipped_outside: int = 0
    skipped_nodata: int = 0
    skipped_unlabelled: int = 0
    applied: ApplyResult | None = None


@dataclass
class ApplyResult:
    path: Path
    confidence_path: Path | None
    counts: dict[str, int]  # pixels per class (classification) or {"pixels": n} (regression)
    seconds: float = 0.0


def make_classifier(method: str, seed: int, n_train: int):
    """scikit-learn estimators with settings that suit embedding vectors (scaled linear model, cosine kNN)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if method == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    if method == "random_forest":
        return RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=-1)
    if method == "knn":
        return KNeighborsClassifier(n_neighbors=max(1, min(5, n_train // 2)), weights="distance", metric="cosine")
    if method == "gradient_boosting":
        return HistGradientBoostingClassifier(max_iter=200, random_state=seed)
    raise GAIRError(f"unknown classifier {method!r}; choose one of {CLASSIFIERS}")


@dataclass(frozen=True)
class Estimation:
    """What a supervised task adds to the one training procedure (train_model): the rest is shared."""

    task: str  # saved in the model file: "classification" or "regression"
    method: str
    numeric: bool  # read the label field as numbers
    field_key: str  # the report's name for the label field
    targets: Callable  # (TrainingData, folds) -> (y, extra model-file fields); raises GAIRError on too few labels
    estimator: Callable  # (n_train, seed) -> an unfitted scikit-learn estimator
    splitter: Callable  # (folds, seed) -> the cross-validation splitter (grouped by feature)
    report: Callable  # (y, predicted, extra, folds, grouped) -> report dict
    scores: Callable  # (y, predicted) -> the headline scores of a split ({"accuracy", "macro_f1"} or {"r2", "rmse"})
    metric: str  # the headline score the estimates are compared by ("accuracy" or "r2")


def train_model(raster_path: str | os.PathLike, labels_path: str | os.PathLike, label_field: str,
                model_path: str | os.PathLike, how: Estimation, *, folds: int = 5, seed: int = 0,
                layer: str | None = None, report_paths: list[str | os.PathLike] = (),
                max_pixels_per_feature: int = 1000, output_path: str | os.PathLike | None = None,
                confidence_path: str | os.PathLike | None = None, block_size: int | None = None,
                cv_block_km: float | None = None, learning_curve: bool = True,
                progress: Callable[[float], None] | None = None, cancel: Callable[[], bool] | None = None
                ) -> TrainResult:
    """Sample the labelled features, cross-validate (grouped by feature so a polygon's pixels never sit on both
    sides; and by spatial blocks, see analysis.validation), fit on all samples, save the model with its embedding
    identity, write reports, optionally apply."""
    from sklearn.model_selection import cross_val_predict

    if folds < 2:
        raise GAIRError("cross-validation needs folds >= 2")
    with EmbeddingRaster(raster_path) as raster:
        data = training_data(raster, labels_path, label_field, layer, numeric=how.numeric,
                             max_pixels_per_feature=max_pixels_per_feature, seed=seed)
        y, extra = how.targets(data, folds)
        check_cancel(cancel, "gathering training samples")
        if progress is not None:
            progress(0.1)
        predicted = cross_val_predict(how.estimator(len(y) * (folds - 1) // folds, seed), data.vectors, y,
                                      groups=data.groups, cv=how.splitter(folds, seed))
        report = how.report(y, predicted, extra, folds, data.grouped)
        if progress is not None:
            progress(0.3)
        report["validation"] = defend_estimates(raster, data, y, how, folds, seed, cv_block_km, learning_curve,
                                                predicted, cancel)
        report.update({"embedding_model": raster.meta.model, "embedding_space": raster.meta.space.id,
                       how.field_key: label_field})
        check_cancel(cancel, "cross-validating")
        if progress is not None:
            progress(0.6)
        estimator = how.estimator(len(y), seed).fit(data.vectors, y)
        saved = save_model_file(model_path, raster, task=how.task, method=how.method, estimator=estimator, **extra,
                                field=label_field, report=report)
        written = [write_report(report, p) for p in report_paths]
    result = TrainResult(saved, report, written, len(y), data.features, data.skipped_outside, data.skipped_nodata,
                         data.skipped_unlabelled)
    if output_path is not None:  # all or nothing: a cancelled apply also removes the model and reports
        try:
            result.applied = apply_model(raster_path, saved, output_path, confidence_path=confidence_path,
                                         block_size=block_size, progress=stage(progress, 0.7, 1.0), cancel=cancel)
        except BaseException:
            for path in (saved, *written):
                path.unlink(missing_ok=True)
            raise
    elif progress is not None:
        progress(1.0)
    return result


def _class_targets(data, folds: int) -> tuple[np.ndarray, dict]:
    labels = data.targets.astype(str)
    check_class_counts(labels, data.groups, folds)
    classes = sorted_classes(labels)
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in labels], np.int64), {"classes": classes}


@guarded
def train_classifier(raster_path: str | os.PathLike, labels_path: str | os.PathLike, class_field: str,
                     model_path: str | os.PathLike, *, method: str = "logistic", folds: int = 5, seed: int = 0,
                     layer: str | None = None, report_paths: list[str | os.PathLike] = (),
                     max_pixels_per_feature: int = 1000, output_path: str | os.PathLike | None = None,
                     confidence_path: str | os.PathLike | None = None, block_size: int | None = None,
                     cv_block_km: float | None = None, learning_curve: bool = True,
                     progress: Callable[[float], None] | None = None,
                     cancel: Callable[[], bool] | None = None) -> TrainResult:
    """train_model with a classifier: stratified group k-fold, accuracy/F1 report, class + confidence rasters."""
    from sklearn.model_selection import StratifiedGroupKFold

    if method not in CLASSIFIERS:
        raise GAIRError(f"unknown classifier {method!r}; choose one of {CLASSIFIERS}")
    how = Estimation(
        "classification", method, numeric=False, field_key="class_field", targets=_class_targets,
        estimator=lambda n, seed: make_classifier(method, seed, n),
        splitter=lambda folds, seed: StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed),
        report=lambda y, predicted, extra, folds, grouped: classification_report(
            y, predicted, extra["classes"], method, folds, grouped),
        scores=classification_scores, metric="accuracy")
    return train_model(raster_path, labels_path, class_field, model_path, how, folds=folds, seed=seed, layer=layer,
                       report_paths=report_paths, max_pixels_per_feature=max_pixels_per_feature,
                       output_path=output_path, confidence_path=confidence_path, block_size=block_size,
                       cv_block_km=cv_block_km, learning_curve=learning_curve, progress=progress, cancel=cancel)


@guarded
def apply_model(raster_path: str | os.PathLike, model_path: str | os.PathLike, out_path: str | os.PathLike, *,
                     confidence_path: str | os.PathLike | None = None, block_size: int | None = None,
                     progress: Callable[[float], None] | None = None,
                     cancel: Callable[[], bool] | None = None) -> ApplyResult:
    """Apply a saved classifier (Byte class raster named by class, + float32 confidence = top probability)
    or regressor (float32 prediction raster) to an embedding raster in the space it was trained on."""
    from sklearn import config_context as sklearn_config

    started = time.perf_counter()
    bundle = load_model_file(model_path)
    estimator = bundle["estimator"]
    regression = bundle.get("task") == "regression"
    with EmbeddingRaster(raster_path) as raster:
        check_model_matches(bundle, raster, model_path)
        tags = {"GAIR_ANALYSIS_MODEL": Path(model_path).name, "GAIR_METHOD": bundle["method"]}
        if regression:
            out = OutputRaster(out_path, raster, "prediction", "float32", float("nan"),
                               f"predicted {bundle['field']}", tags)
            conf = None
        else:
            out = OutputRaster(out_path, raster, "classes", "uint8", CLASS_NODATA, f"class ({bundle['field']})", tags,
                               class_names=list(bundle["classes"]))
            conf = OutputRaster(confidence_path, raster, "confidence", "float32", float("nan"),
                                "confidence (top probability)", tags) if confidence_path is not None else None
        counts = np.zeros(len(bundle.get("classes", [])) + 1, np.int64)
        with all_or_nothing(out, conf):
            with sklearn_config(assume_finite=True):  # nodata columns are left out before the estimator sees them
                for window, block in raster.iter_blocks(block_size, progress, cancel, raw=True):
                    raw = block.reshape(raster.dims, -1)
                    if regression:
                        values = np.full(raw.shape[1], np.nan, np.float32)
                        counts[0] += _predict_chunks(raster, raw, estimator, values)
                        out.write(window, values)
                        continue
                    classes = np.full(raw.shape[1], CLASS_NODATA, np.uint8)
                    confidence = np.full(raw.shape[1], np.nan, np.float32)
                    _predict_chunks(raster, raw, estimator, classes, confidence)
                    counts += np.bincount(classes, minlength=len(counts))
                    out.write(window, classes)
                    if conf is not None:
                        conf.write(window, confidence)
    named = {"pixels": int(counts[0])} if regression else dict(zip(bundle["classes"], counts[1:].tolist()))
    return ApplyResult(Path(out_path), Path(confidence_path) if conf is not None else None, named,
                       time.perf_counter() - started)


def _predict_chunks(raster: EmbeddingRaster, raw: np.ndarray, estimator, values: np.ndarray,
                    confidence: np.ndarray | None = None, chunk: int = APPLY_CHUNK) -> int:
    """Predict the (K, n) stored block `raw` in cache-sized column chunks, dequantised one at a time, writing
    `values` (regression) or class codes 1..n into `values` and the top probability into `confidence`.
    Returns the number of valid pixels. Pixel-major views of the chunk go to scikit-learn without a gather
    when the whole chunk is valid."""
    scratch = np.empty((raw.shape[0], min(chunk, raw.shape[1])), np.float32)
    valid_total = 0
    for start in range(0, raw.shape[1], chunk):
        x = raster.to_float(raw[:, start:start + chunk], scratch)
        valid = np.isfinite(x).all(axis=0)
        count = int(valid.sum())
        if count == 0:
            continue
        valid_total += count
        pixels = x.T if count == len(valid) else x[:, valid].T  # (n_valid, K) for scikit-learn
        part = slice(start, start + x.shape[1])
        if confidence is None:
            values[part][valid] = estimator.predict(pixels)
            continue
        proba = estimator.predict_proba(pixels)
        best = np.argmax(proba, axis=1)
        values[part][valid] = estimator.classes_[best] + 1
        confidence[part][valid] = proba[np.arange(len(best)), best]
    return valid_total
