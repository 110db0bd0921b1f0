"""Training data from labelled layers, and the saved-model file that remembers which embedding space it learned."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GAIRError
from ..io.embedding_raster import EmbeddingRaster
from ..io.files import atomic_path
from ..io.space import EmbeddingSpace
from ..io.vectors import read_layer
from .pixels import samples_from_layer

MODEL_FORMAT = "gair-analysis-model"
MODEL_VERSION = 2  # 2: the full embedding-space identity (query mode, NILI convention, PCA hash, options)


@dataclass
class TrainingData:
    """Pixel vectors X (n, K) with their targets, and the feature each came from (for grouped cross-validation)."""

    vectors: np.ndarray
    targets: np.ndarray  # raw labels (str) or values (float)
    groups: np.ndarray
    features: int
    skipped_outside: int
    skipped_nodata: int
    skipped_unlabelled: int

    @property
    def grouped(self) -> bool:
        """True when some feature gave several pixels (polygons), so folds must split by feature, not pixel."""
        return len(self.groups) > len(np.unique(self.groups))


def training_data(raster: EmbeddingRaster, labels_path: str | os.PathLike, field: str, layer: str | None = None,
                  numeric: bool = False, max_pixels_per_feature: int = 1000, seed: int = 0) -> TrainingData:
    """Pixels under labelled points (one each) and inside labelled polygons (all, capped per feature)."""
    data = read_layer(labels_path, layer, require_crs=True)
    column = data.column(field)
    labelled = np.array([_has_value(v) for v in column], bool)
    if numeric:
        try:
            values = np.array([float(v) if ok else np.nan for v, ok in zip(column, labelled)], np.float64)
        except (TypeError, ValueError) as exc:
            raise GAIRError(f"field {field!r} of {data.path.name} must be numeric for regression ({exc})") from exc
        labelled &= np.isfinite(values)
    else:
        values = np.array([_label_text(v) for v in column], dtype=object)
    if not labelled.any():
        raise GAIRError(f"field {field!r} of {data.path.name} has no values")
    kept = np.flatnonzero(labelled)
    data.geometries = data.geometries[kept]
    samples = samples_from_layer(raster, data)
    rng = np.random.default_rng(seed)
    pick = np.concatenate([_cap(np.flatnonzero(samples.feature_index == f), max_pixels_per_feature, rng)
                           for f in np.unique(samples.feature_index)])
    owner = samples.feature_index[pick]
    return TrainingData(samples.vectors[pick], values[kept][owner], kept[owner], len(np.unique(owner)),
                        samples.skipped_outside, samples.skipped_nodata, int((~labelled).sum()))


def _has_value(v) -> bool:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return False
    return str(v).strip() != ""


def _label_text(v) -> str:
    """Integer-valued labels (1, 1.0, '1') become '1' so numeric class fields give tidy names."""
    if isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v).is_integer():
        return str(int(v))
    return str(v).strip() if v is not None else ""


def _cap(indices: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(indices, limit, replace=False)) if len(indices) > limit else indices


def sorted_classes(labels: np.ndarray) -> list[str]:
    """Numeric labels in numeric order, otherwise alphabetical."""
    unique = sorted(set(labels.tolist()))
    try:
        return sorted(unique, key=float)
    except ValueError:
        return unique


def check_class_counts(labels: np.ndarray, groups: np.ndarray, folds: int) -> None:
    """Every class needs >= `folds` labelled features, so each fold can hold one out."""
    classes = sorted_classes(labels)
    if len(classes) < 2:
        raise GAIRError(f"only one class ({classes[0]!r}) is labelled; a classifier needs at least two")
    too_few = {c: len(np.unique(groups[labels == c])) for c in classes}
    too_few = {c: n for c, n in too_few.items() if n < folds}
    if too_few:
        listed = ", ".join(f"{c!r}: {n}" for c, n in too_few.items())
        raise GAIRError(f"too few labelled features per class for {folds}-fold cross-validation ({listed}); "
                        f"label at least {folds} features of each class, merge rare classes, or lower folds")


def save_model_file(path: str | os.PathLike, raster: EmbeddingRaster, **content) -> Path:
    """joblib file holding the estimator plus the embedding space (as plain values) and dims it was trained on."""
    import joblib
    import sklearn

    space = raster.meta.space
    bundle = dict(format=MODEL_FORMAT, version=MODEL_VERSION, model=space.model, space=dataclasses.asdict(space),
                  space_id=space.id, dims=raster.dims, unit_vectors=raster.dtype == "int8",
                  sklearn=sklearn.__version__, **content)
    with atomic_path(path) as tmp:
        joblib.dump(bundle, tmp, compress=3)
    return Path(path)


def load_model_file(path: str | os.PathLike) -> dict:
    """Load a saved model (trusted files only: joblib runs pickled code, like any scikit-learn model file)."""
    import joblib

    path = Path(path)
    if not path.is_file():
        raise GAIRError(f"model file {path} does not exist")
    try:
        bundle = joblib.load(path)
    except Exception as exc:
        raise GAIRError(f"{path.name} is not a readable GAIR analysis model ({exc})") from exc
    if not isinstance(bundle, dict) or bundle.get("format") != MODEL_FORMAT:
        raise GAIRError(f"{path.name} is not a GAIR analysis model (train one with `python -m engine classify`)")
    if bundle.get("version") != MODEL_VERSION:
        raise GAIRError(f"{path.name} was saved by another GAIR version (model file version {bundle.get('version')}, "
                        f"this one reads {MODEL_VERSION}); train it again")
    return bundle


def check_model_matches(bundle: dict, raster: EmbeddingRaster, model_path) -> None:
    """Refuse rasters in another embedding space (model, query mode, NILI convention, PCA, options) or dims."""
    name = Path(model_path).name
    differences = EmbeddingSpace(**bundle["space"]).differences(raster.meta.space)
    if differences:
        raise GAIRError(f"{name} was trained on embeddings made another way than {raster.path.name} "
                        f"({'; '.join(differences)}); embed the raster the way the training raster was, or retrain")
    if bundle["dims"] != raster.dims:
        raise GAIRError(f"{name} was trained on {bundle['dims']}-dim embeddings, but {raster.path.name} has "
                        f"{raster.dims} dims; use a raster embedded the same way, or retrain on this one")
    unit = raster.dtype == "int8"
    if bundle.get("unit_vectors", unit) != unit:  # int8 rasters hold unit vectors, the others keep the lengths
        trained = "int8 (unit-length)" if bundle["unit_vectors"] else "float32/int16"
        raise GAIRError(f"{name} was trained on {trained} embeddings but {raster.path.name} stores {raster.dtype}; "
                        "apply it to a raster of the data type it was trained on, or retrain on this one")
