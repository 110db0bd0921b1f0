"""Localized embeddings at labelled points of a Sentinel-2 raster, one feature set per query mode.

NILI, bilinear and bicubic come from the engine's per-feature pipeline (`embed_features`, read back from its
GeoPackage), so the evaluation sees exactly what users get. "mean" is the crop embedding (mean of the tokens) of the
same crop that pipeline centres on the point: the baseline a localized query has to beat. Non-point features are
taken at their centroid. A point keeps its row only where every mode gave it an embedding.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import GAIRError
from ..io.vectors import read_layer

POINT_MODES = ("nili", "bilinear", "bicubic", "mean")


def class_labels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class values as strings and a mask of the rows that have one (null, NaN and blank are unlabelled)."""
    out = np.array(["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip() for v in values],
                   dtype=object)
    return out, out != ""


def read_embeddings(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) gair_### vectors and the gair_status column of a layer written by embed_features."""
    from ..io.feature_layer import STATUS_FIELD, read_embedding_layer

    layer, vectors, _ = read_embedding_layer(path)
    return vectors, np.asarray(layer.column(STATUS_FIELD), dtype=object)


def _point_xy(layer, crs) -> np.ndarray:
    """Each feature's point (centroid for other geometries) in `crs`; NaN where it has no geometry."""
    import shapely

    from ..io.vectors import reproject

    geoms = reproject(layer.geometries, layer.crs, crs)
    xy = np.full((len(layer), 2), np.nan)
    for i, geom in enumerate(geoms):
        if geom is not None and not shapely.is_empty(geom):
            point = geom if shapely.get_type_id(geom) == 0 else shapely.centroid(geom)
            xy[i] = point.x, point.y
    return xy


def ground_metres(xy: np.ndarray, crs) -> np.ndarray:
    """Coordinates in the raster CRS -> metres (its own axes when projected, EASE-Grid 2.0 when geographic)."""
    from pyproj import CRS, Transformer

    from .patches import EQUAL_AREA_CRS

    crs = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    if crs.is_projected:
        return xy * crs.axis_info[0].unit_conversion_factor
    return np.column_stack(Transformer.from_crs(crs, EQUAL_AREA_CRS, always_xy=True).transform(xy[:, 0], xy[:, 1]))


def crop_means(model, raster: str | os.PathLike, xy: np.ndarray, bands=None, batch_size: int = 16,
               cancel: Callable[[], bool] | None = None) -> np.ndarray:
    """(N, D) crop embedding of the crop the point pipeline centres on each point; NaN rows where it has none."""
    from ..pipeline.features import _point_task
    from ..pipeline.source import SourceRaster
    from ..runtime.preprocess import preprocess_rs
    from .protocol import check_cancel

    out = np.full((len(xy), model.config.embed_dim), np.nan, np.float32)
    with SourceRaster(raster, model.config, bands) as src:
        tasks = [t for i, (x, y) in enumerate(xy) if np.isfinite(x)
                 and not isinstance(t := _point_task(src, i, x, y), str)]
        for k in range(0, len(tasks), batch_size):
            check_cancel(cancel)
            rows, inputs = [], []
            for task in tasks[k:k + batch_size]:
                data, valid = src.read(task.window)
                r = min(int(task.rel[1] * valid.shape[0]), valid.shape[0] - 1)
                c = min(int(task.rel[0] * valid.shape[1]), valid.shape[1] - 1)
                if valid[r, c]:
                    rows.append(task.feature)
                    inputs.append(preprocess_rs(data, model.config)[0])
            if rows:
                out[rows] = np.asarray(model.encode_rs(np.stack(inputs)), np.float32)
    return out


def point_features(model, raster: str | os.PathLike, layer_path: str | os.PathLike, class_field: str,
                   modes: tuple[str, ...] = POINT_MODES, bands=None, batch_size: int | None = None,
                   progress: Callable[[float], None] | None = None, cancel: Callable[[], bool] | None = None
                   ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict]:
    """{mode: (N, D)}, labels (N,), coordinates in metres (N, 2) and counts of the points left out (by reason)."""
    import rasterio

    from ..pipeline import embed_features

    unknown = [m for m in modes if m not in POINT_MODES]
    if unknown or not modes:
        raise GAIRError(f"query modes must be among {', '.join(POINT_MODES)}, got {', '.join(modes) or 'none'}")
    layer = read_layer(layer_path, require_crs=True)
    labels, labelled = class_labels(layer.column(class_field))
    with rasterio.open(raster) as ds:
        raster_crs = ds.crs
    xy = _point_xy(layer, raster_crs)
    features: dict[str, np.ndarray] = {}
    ok = labelled & np.isfinite(xy).all(axis=1)
    with tempfile.TemporaryDirectory(prefix="gair-eval-") as tmp:
        for i, mode in enumerate(modes):
            if mode == "mean":
                vectors = crop_means(model, raster, xy, bands, batch_size or 16, cancel)
                good = np.isfinite(vectors).all(axis=1)
            else:
                out = Path(tmp) / f"{mode}.gpkg"
                embed_features(raster, layer_path, out, model, bands=bands, polygons="centroid", mode=mode,
                               batch_size=batch_size, cancel=cancel)
                vectors, status = read_embeddings(out)
                good = status == "ok"
            features[mode] = vectors
            ok &= good
            if progress is not None:
                progress((i + 1) / len(modes))
    skipped = {"unlabelled": int((~labelled).sum()), "no embedding": int((labelled & ~ok).sum())}
    if ok.sum() == 0:
        raise GAIRError(f"none of the {len(layer)} features of {Path(layer_path).name} has both a {class_field!r} "
                        f"value and an embedding on {Path(raster).name}; check the class field and that the points "
                        "lie on valid raster data")
    coords = ground_metres(xy[ok], raster_crs)
    return {m: v[ok] for m, v in features.items()}, labels[ok].astype(str), coords, skipped
