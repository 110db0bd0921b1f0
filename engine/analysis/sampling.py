"""Training data from labelled layers, and the saved-model file that remembers which embedding space it learned."""
from __future__ import annotations

import dataclasses
import json
import os
import zipfile
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
MODEL_VERSION = 3  # 2: the full embedding-space identity; 3: a skops file (no pickle) with JSON metadata


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
    rows: np.ndarray | None = None  # raster pixel of each sample (for spatial cross-validation)
    cols: np.ndarray | None = None

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
                        samples.skipped_outside, samples.skipped_nodata, int((~labelled).sum()),
                        samples.rows[pick], samples.cols[pick])


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


def save_model_file(path: str | os.PathLike, raster: EmbeddingRaster, *, estimator, **content) -> Path:
    """skops file: the estimator as arrays plus plain values (no pickle), and the embedding space (as plain values)
    and dims it was trained on as one JSON text, so loading it can never run code."""
    import sklearn
    import skops.io

    space = raster.meta.space
    meta = dict(model=space.model, space=dataclasses.asdict(space), space_id=space.id, dims=raster.dims,
                unit_vectors=raster.dtype == "int8", sklearn=sklearn.__version__, **content)
    bundle = dict(format=MODEL_FORMAT, version=MODEL_VERSION, meta=json.dumps(meta, default=_plain),
                  estimator=estimator)
    with atomic_path(path) as tmp:
        skops.io.dump(bundle, tmp)
    return Path(path)


def _plain(value):
    """numpy scalars and arrays in reports as JSON numbers and lists."""
    return value.tolist() if isinstance(value, (np.generic, np.ndarray)) else str(value)


def load_model_file(path: str | os.PathLike) -> dict:
    """Load a saved model: only skops files whose every stored type is one GAIR writes (checked in the file's
    schema before anything is built); pickles (joblib, .pkl) are refused unopened, as they can run code."""
    import skops.io

    path = Path(path)
    head = read_head(path, "model file", 8)
    if head[:4] != b"PK\x03\x04":
        if _looks_like_pickle(head):
            raise GAIRError(f"{path.name} is a pickle (a model file of an older GAIR version, or of another tool), "
                            f"which can run code when loaded; it was not opened: re-train the model with this "
                            f"version of GAIR")
        raise GAIRError(f"{path.name} is not a readable GAIR analysis model (neither a skops file nor a pickle); "
                        f"train one with `python -m engine train-classifier`")
    try:
        with zipfile.ZipFile(path) as archive:
            schema = json.loads(archive.read("schema.json"))
        foreign = sorted(t for t in stored_types(schema) if t not in ALLOWED_MODEL_TYPES)
        if not foreign:
            bundle = skops.io.load(path, trusted=SKOPS_TRUSTED)
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError, EOFError) as exc:
        raise GAIRError(f"{path.name} is not a readable GAIR analysis model (damaged or cut short: {exc}); "
                        f"train it again") from exc
    except Exception as exc:  # skops refusing a type, or a schema it cannot rebuild
        raise GAIRError(f"{path.name} is not a readable GAIR analysis model ({type(exc).__name__}: {exc})") from exc
    if foreign:
        raise GAIRError(f"{path.name} holds types GAIR never writes ({', '.join(foreign[:3])}); it was refused "
                        f"without loading it, as it could run code: use a model trained by GAIR")
    if not isinstance(bundle, dict) or bundle.get("format") != MODEL_FORMAT:
        raise GAIRError(f"{path.name} is not a GAIR analysis model (train one with "
                        "`python -m engine train-classifier`)")
    if bundle.get("version") != MODEL_VERSION:
        raise GAIRError(f"{path.name} was saved by another GAIR version (model file version {bundle.get('version')}, "
                        f"this one reads {MODEL_VERSION}); train it again")
    try:
        meta = json.loads(bundle["meta"])
    except (KeyError, TypeError, ValueError) as exc:
        raise GAIRError(f"{path.name} is not a readable GAIR analysis model (metadata: {exc})") from exc
    return dict(format=MODEL_FORMAT, version=MODEL_VERSION, estimator=bundle["estimator"], **meta)


def read_head(path: Path, what: str, size: int) -> bytes:
    """The first bytes of a regular file, with one line for a missing, unreadable, special or empty file."""
    try:
        if not path.is_file():
            raise GAIRError(f"{what} {path} does not exist" if not path.exists() else
                            f"{what} {path} is not a regular file")
        with path.open("rb") as f:
            head = f.read(size)
    except PermissionError as exc:
        raise GAIRError(f"{what} {path} cannot be read: permission denied (ask its owner to share it)") from exc
    if not head:
        raise GAIRError(f"{what} {path} is empty (0 bytes); save or copy it again")
    return head


def _looks_like_pickle(head: bytes) -> bool:
    """pickle protocol 2+ (b"\\x80"), joblib's zlib/gzip/bz2/xz/lz4 compressions, or protocol 0/1 opcodes."""
    return head[:1] in (b"\x80", b"(", b"]", b"}") or head[:2] in (b"x\x01", b"x\x5e", b"x\x9c", b"x\xda",
                                                                 b"\x1f\x8b") or head[:3] == b"BZh" \
        or head[:6] == b"\xfd7zXZ" or head[:4] == b"\x04\x22\x4d\x18" or head.startswith(b"ZF")


def stored_types(schema) -> set[str]:
    """Every `module.Class` a skops schema would build (estimators, arrays' dtypes, containers) and every skops
    loader it names, read as JSON."""
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__class__" in node:
                found.add(f"{node.get('__module__')}.{node['__class__']}")
            if "__loader__" in node:
                found.add(f"skops loader {node['__loader__']}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


# What save_model_file writes for the estimators of make_classifier / make_regressor (binary and multi-class),
# and nothing else: containers, plain values, numeric arrays, and the scikit-learn classes those estimators hold.
ALLOWED_MODEL_TYPES = frozenset(
    [f"builtins.{n}" for n in ("dict", "list", "tuple", "str", "int", "float", "bool", "NoneType")]
    + [f"numpy.{n}" for n in ("ndarray", "float64", "float32", "int64", "int32", "intp", "uint8", "uint32",
                              "uint64", "bool", "bool_")]
    + ["numpy.random._generator.Generator",
       "sklearn.pipeline.Pipeline", "sklearn.preprocessing._data.StandardScaler",
       "sklearn.preprocessing._label.LabelEncoder",
       "sklearn.linear_model._logistic.LogisticRegression", "sklearn.linear_model._ridge.RidgeCV",
       "sklearn.ensemble._forest.RandomForestClassifier", "sklearn.ensemble._forest.RandomForestRegressor",
       "sklearn.tree._classes.DecisionTreeClassifier", "sklearn.tree._classes.DecisionTreeRegressor",
       "sklearn.tree._tree.Tree", "sklearn.neighbors._classification.KNeighborsClassifier",
       "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
       "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
       "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
       "sklearn._loss.loss.HalfBinomialLoss", "sklearn._loss.loss.HalfMultinomialLoss",
       "sklearn._loss._loss.CyHalfBinomialLoss", "sklearn._loss._loss.CyHalfMultinomialLoss",
       "sklearn._loss.link.LogitLink", "sklearn._loss.link.MultinomialLogit", "sklearn._loss.link.Interval"]
    + [f"skops loader {n}Node" for n in ("Dict", "List", "Tuple", "Json", "Type", "NdArray", "Object", "Tree", "Loss",
                                         "RandomGenerator")])
# the two of them skops does not trust by default (checked against the whole list above first)
SKOPS_TRUSTED = ["sklearn.tree._tree.Tree", "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


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
