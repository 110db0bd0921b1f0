"""Classify from location: a class map from labelled points and the location encoder alone (no imagery).

The GAIR location encoder was aligned with Sentinel-2 and street-view embeddings in pretraining, so its vector of a
place says what the place is like. A classifier trained on the location embeddings of labelled points (CSP's
second stage, here with the encoder frozen, as the evaluation's "probe") predicts a class for every pixel centre of
any extent at any pixel size: a map prior where no imagery is needed. Accuracy is estimated first by stratified
k-fold cross-validation on the points.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..errors import GAIRError
from ..io.space import EmbeddingSpace
from ..params import LOCATION_CLASSIFIERS
from .rasters import CLASS_NODATA, OutputRaster, all_or_nothing, check_cancel, stage

MAX_PIXELS = 50_000_000
DEFAULT_WIDTH = 512  # pixels across the extent when no pixel size is given
TILE = 256
LOCATIONS_PER_BLOCK = 65536  # pixel centres encoded per call


@dataclass
class LocationMapResult:
    path: Path
    classes: list[str]
    accuracy: float | None  # cross-validated overall accuracy on the points (None: too few per class)
    folds: int
    points: int
    width: int
    height: int
    confidence_path: Path | None = None
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        acc = (f"cross-validated accuracy {self.accuracy:.3f} ({self.folds} folds)" if self.accuracy is not None
               else "too few points per class for cross-validation")
        also = f" and {self.confidence_path}" if self.confidence_path else ""
        return (f"trained on {self.points} points ({len(self.classes)} classes), {acc}; wrote {self.path} "
                f"({self.width} x {self.height} px){also} in {self.seconds:.1f}s")


def location_classifier(method: str, seed: int = 0):
    """A scikit-learn pipeline on location embeddings: standardised logistic regression, cosine kNN or a forest."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if method == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    if method == "knn":
        return KNeighborsClassifier(n_neighbors=5, metric="cosine", weights="distance")
    if method == "random_forest":
        return RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1)
    raise GAIRError(f"method must be one of {', '.join(LOCATION_CLASSIFIERS)}, got {method!r}")


def read_points(path: str | os.PathLike, class_field: str, lon_field: str = "lon",
                lat_field: str = "lat") -> tuple[np.ndarray, np.ndarray]:
    """[lon, lat] (N, 2) and class names of labelled points (a CSV with lon/lat columns or a point layer in any CRS,
    through io.vectors.read_point_table); rows without a class or valid coordinates are left out."""
    from ..io.vectors import read_point_table

    rows = read_point_table(path, lon_field, lat_field, path_field="", label_field=class_field, require_label=True)
    lonlat = np.array([[r["lon"], r["lat"]] for r in rows], np.float64).reshape(-1, 2)
    labels = np.array([r["label"].strip() for r in rows], dtype=object)
    ok = ~np.isin(labels, ("", "nan", "None")) & np.isfinite(lonlat).all(axis=1) & (np.abs(lonlat[:, 1]) <= 90)
    return lonlat[ok], labels[ok].astype(str)


def _grid(lonlat: np.ndarray, extent, extent_crs: str | None, pixel_size: float | None):
    """(crs, transform, width, height) of the output: the extent (default: the points' lon/lat box + 10 %)."""
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    crs = CRS.from_user_input(extent_crs or "EPSG:4326")
    if extent is None:
        if extent_crs not in (None, "", "EPSG:4326"):
            raise GAIRError("give --extent with --extent-crs (without an extent the map covers the points in lon/lat)")
        (x0, y0), (x1, y1) = lonlat.min(0), lonlat.max(0)
        pad = 0.1 * max(x1 - x0, y1 - y0, 1e-3)
        extent = (x0 - pad, y0 - pad, x1 + pad, y1 + pad)
    xmin, ymin, xmax, ymax = map(float, extent)
    if not (xmax > xmin and ymax > ymin):
        raise GAIRError(f"extent must be XMIN YMIN XMAX YMAX with XMAX > XMIN and YMAX > YMIN, got {extent}")
    size = float(pixel_size) if pixel_size else (xmax - xmin) / DEFAULT_WIDTH
    if size <= 0:
        raise GAIRError(f"pixel size must be > 0, got {pixel_size}")
    width, height = math.ceil((xmax - xmin) / size - 1e-9), math.ceil((ymax - ymin) / size - 1e-9)
    if width * height > MAX_PIXELS:
        raise GAIRError(f"{width} x {height} pixels is more than {MAX_PIXELS:,}; choose a larger pixel size or a "
                        "smaller extent")
    return crs, from_origin(xmin, ymax, size, size), width, height


def _cross_validate(method: str, x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> tuple[float | None, int]:
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    k = min(folds, int(np.unique(y, return_counts=True)[1].min()))
    if k < 2:
        return None, 0
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return float(cross_val_score(location_classifier(method, seed), x, y, cv=splitter).mean()), k


def classify_location(points_path: str | os.PathLike, output_path: str | os.PathLike, class_field: str = "label",
                      model=None, *, extent=None, extent_crs: str | None = None, pixel_size: float | None = None,
                      method: str = "logistic", confidence_path: str | os.PathLike | None = None, folds: int = 5,
                      seed: int = 0, lon_field: str = "lon", lat_field: str = "lat", device: str = "auto",
                      backend: str = "auto",
                      progress: Callable[[float], None] | None = None,
                      cancel: Callable[[], bool] | None = None) -> LocationMapResult:
    """Train on the location embeddings of labelled points; write a class raster (and confidence) over `extent`.

    points_path: CSV with lon/lat columns or a vector layer (any CRS). extent: XMIN YMIN XMAX YMAX in extent_crs
    (default EPSG:4326; none: the points' box + 10 %). pixel_size: in extent_crs units (none: 512 px across).
    """
    from pyproj import Transformer
    from rasterio.windows import Window

    from ..runtime.loading import load_model
    from ..runtime.protocol import GAIRModelLike

    started = time.perf_counter()
    if method not in LOCATION_CLASSIFIERS:
        raise GAIRError(f"method must be one of {', '.join(LOCATION_CLASSIFIERS)}, got {method!r}")
    lonlat, labels = read_points(points_path, class_field, lon_field, lat_field)
    classes = sorted(set(labels.tolist()))
    if len(classes) < 2:
        raise GAIRError(f"{Path(points_path).name} has {len(classes)} class(es) in {class_field!r}; need at least two")
    crs, transform, width, height = _grid(lonlat, extent, extent_crs, pixel_size)
    model = model if isinstance(model, GAIRModelLike) else load_model(model, device=device, backend=backend)
    check_cancel(cancel, "reading the points")
    x = np.asarray(model.encode_location(lonlat.astype(np.float64)), np.float64)
    accuracy, used_folds = _cross_validate(method, x, labels, folds, seed)
    classifier = location_classifier(method, seed).fit(x, labels)
    order = [list(classifier.classes_).index(c) for c in classes]
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    like = SimpleNamespace(path=Path(points_path), width=width, height=height, crs=crs, transform=transform,
                           tile_shape=(TILE, TILE), meta=SimpleNamespace(space=EmbeddingSpace.of_model(model)))
    classes_out = OutputRaster(output_path, like, "classes", "uint8", CLASS_NODATA, "class (from location)",
                               {"GAIR_METHOD": method}, class_names=classes)
    confidence_out = (OutputRaster(confidence_path, like, "confidence", "float32", float("nan"), "confidence")
                      if confidence_path else None)
    counts = np.zeros(len(classes), np.int64)
    report = stage(progress, 0.05, 1.0)
    rows_per_block = max(1, min(height, LOCATIONS_PER_BLOCK // max(width, 1)))
    with all_or_nothing(classes_out, confidence_out):
        for row0 in range(0, height, rows_per_block):
            check_cancel(cancel, "mapping classes")
            rows = min(rows_per_block, height - row0)
            cols, rr = np.meshgrid(np.arange(width) + 0.5, np.arange(row0, row0 + rows) + 0.5)
            xs, ys = transform * (cols.ravel(), rr.ravel())
            lon, lat = to_lonlat.transform(xs, ys)
            points = np.column_stack([lon, lat])
            valid = np.isfinite(points).all(1) & (np.abs(points[:, 1]) <= 90)
            cls = np.full(len(points), CLASS_NODATA, np.uint8)
            conf = np.full(len(points), np.nan, np.float32)
            if valid.any():
                proba = classifier.predict_proba(np.asarray(model.encode_location(points[valid]), np.float64))
                proba = proba[:, order]
                cls[valid] = proba.argmax(1).astype(np.uint8) + 1
                conf[valid] = proba.max(1)
                counts += np.bincount(cls[valid] - 1, minlength=len(classes))
            window = Window(0, row0, width, rows)
            classes_out.write(window, cls)
            if confidence_out is not None:
                confidence_out.write(window, conf)
            if report:
                report((row0 + rows) / height)
    return LocationMapResult(Path(output_path), classes, accuracy, used_folds, len(labels), width, height,
                             Path(confidence_path) if confidence_path else None,
                             {c: int(n) for c, n in zip(classes, counts)}, time.perf_counter() - started)
