"""Regression of a numeric field on embeddings: grouped k-fold R^2/RMSE, saved model, prediction raster."""
from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from ..errors import GAIRError
from ..io.embedding_raster import EmbeddingRaster
from ..params import REGRESSORS
from .classify import TrainResult, apply_model
from .rasters import check_cancel, stage
from .report import regression_report, write_report
from .sampling import save_model_file, training_data


def make_regressor(method: str, seed: int):
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if method == "random_forest":
        return RandomForestRegressor(n_estimators=200, random_state=seed, n_jobs=-1)
    if method == "ridge":  # regularisation strength chosen by efficient leave-one-out inside each fit
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    raise GAIRError(f"unknown regressor {method!r}; choose one of {REGRESSORS}")


def train_regressor(raster_path: str | os.PathLike, labels_path: str | os.PathLike, value_field: str,
                    model_path: str | os.PathLike, *, method: str = "random_forest", folds: int = 5, seed: int = 0,
                    layer: str | None = None, report_paths: list[str | os.PathLike] = (),
                    max_pixels_per_feature: int = 1000, output_path: str | os.PathLike | None = None,
                    block_size: int | None = None, progress: Callable[[float], None] | None = None,
                    cancel: Callable[[], bool] | None = None) -> TrainResult:
    """k-fold (grouped by feature) R^2 and RMSE, a saved model, and optionally a float32 prediction raster."""
    from sklearn.model_selection import GroupKFold, cross_val_predict

    if method not in REGRESSORS:
        raise GAIRError(f"unknown regressor {method!r}; choose one of {REGRESSORS}")
    if folds < 2:
        raise GAIRError("cross-validation needs folds >= 2")
    with EmbeddingRaster(raster_path) as raster:
        data = training_data(raster, labels_path, value_field, layer, numeric=True,
                             max_pixels_per_feature=max_pixels_per_feature, seed=seed)
        if data.features < max(folds, 3):
            raise GAIRError(f"only {data.features} labelled features with values inside the raster; {folds}-fold "
                            f"cross-validation needs at least {max(folds, 3)}: add labels or lower folds")
        y = data.targets.astype(np.float64)
        check_cancel(cancel, "gathering training samples")
        if progress is not None:
            progress(0.1)
        splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        predicted = cross_val_predict(make_regressor(method, seed), data.vectors, y, groups=data.groups, cv=splitter)
        report = regression_report(y, predicted, method, folds, data.grouped)
        report.update(embedding_model=raster.meta.model, embedding_space=raster.meta.space.id, value_field=value_field)
        check_cancel(cancel, "cross-validating")
        if progress is not None:
            progress(0.6)
        estimator = make_regressor(method, seed).fit(data.vectors, y)
        saved = save_model_file(model_path, raster, task="regression", method=method, estimator=estimator,
                                field=value_field, report=report)
        written = [write_report(report, p) for p in report_paths]
    result = TrainResult(saved, report, written, len(y), data.features, data.skipped_outside, data.skipped_nodata,
                         data.skipped_unlabelled)
    if output_path is not None:  # all or nothing: a cancelled apply also removes the model and reports
        try:
            result.applied = apply_model(raster_path, saved, output_path, block_size=block_size,
                                              progress=stage(progress, 0.7, 1.0), cancel=cancel)
        except BaseException:
            for path in (saved, *written):
                path.unlink(missing_ok=True)
            raise
    elif progress is not None:
        progress(1.0)
    return result
