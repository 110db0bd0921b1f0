"""Regression of a numeric field on embeddings: grouped k-fold R^2/RMSE, saved model, prediction raster."""
from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from ..errors import GAIRError
from ..io.guard import guarded
from ..params import REGRESSORS
from .classify import Estimation, TrainResult, train_model
from .report import regression_report, regression_scores


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


def _value_targets(data, folds: int) -> tuple[np.ndarray, dict]:
    if data.features < max(folds, 3):
        raise GAIRError(f"only {data.features} labelled features with values inside the raster; {folds}-fold "
                        f"cross-validation needs at least {max(folds, 3)}: add labels or lower folds")
    return data.targets.astype(np.float64), {}


@guarded
def train_regressor(raster_path: str | os.PathLike, labels_path: str | os.PathLike, value_field: str,
                    model_path: str | os.PathLike, *, method: str = "random_forest", folds: int = 5, seed: int = 0,
                    layer: str | None = None, report_paths: list[str | os.PathLike] = (),
                    max_pixels_per_feature: int = 1000, output_path: str | os.PathLike | None = None,
                    block_size: int | None = None, cv_block_km: float | None = None, learning_curve: bool = True,
                    progress: Callable[[float], None] | None = None,
                    cancel: Callable[[], bool] | None = None) -> TrainResult:
    """train_model with a regressor: group k-fold R^2 and RMSE, a float32 prediction raster when applied."""
    from sklearn.model_selection import GroupKFold

    if method not in REGRESSORS:
        raise GAIRError(f"unknown regressor {method!r}; choose one of {REGRESSORS}")
    how = Estimation(
        "regression", method, numeric=True, field_key="value_field", targets=_value_targets,
        estimator=lambda n, seed: make_regressor(method, seed),
        splitter=lambda folds, seed: GroupKFold(n_splits=folds, shuffle=True, random_state=seed),
        report=lambda y, predicted, extra, folds, grouped: regression_report(y, predicted, method, folds, grouped),
        scores=regression_scores, metric="r2")
    return train_model(raster_path, labels_path, value_field, model_path, how, folds=folds, seed=seed, layer=layer,
                       report_paths=report_paths, max_pixels_per_feature=max_pixels_per_feature,
                       output_path=output_path, block_size=block_size, cv_block_km=cv_block_km,
                       learning_curve=learning_curve, progress=progress, cancel=cancel)
