"""Vector features -> embedding attributes: RS embeddings at points/polygons, street-view photos, locations.

Every feature gets a row: its embedding in `gair_000..` (null when it cannot have one) and `gair_status` saying
why not ("ok", "outside raster", "nodata", "unreadable photo: ..."). Failures are counted in one warning, never
raised, so one bad feature does not sink a layer.
"""
from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import Cancelled, GAIRError
from ..io.embedding_raster import EmbeddingRaster
from ..io.feature_layer import embedding_tags, write_features
from ..io.guard import guarded
from ..io.space import EmbeddingSpace, check_same_space
from ..io.vectors import VectorLayer, is_point, is_polygonal, read_layer, reproject
from ..params import FIELD_MODES
from ..params.common import MIN_VALID, RASTER_OVERLAP
from .blend import numpy_blas_beside
from .raster import as_model, default_batch_size
from .source import SourceRaster

Progress = Callable[[float], None] | None
Cancel = Callable[[], bool] | None
OK = "ok"
CHUNK = 64  # features prepared at a time (bounds memory for large polygon layers)


@dataclass
class LayerResult:
    """What an embed-* run wrote: counts per status, and the vector space of the embeddings."""

    path: Path
    total: int
    embedded: int
    problems: dict[str, int] = field(default_factory=dict)
    space: str = ""  # id of the embedding space (GAIR_SPACE)

    def summary(self) -> str:
        text = f"{self.embedded} of {self.total} features embedded -> {self.path}"
        if self.problems:
            text += "; no embedding for " + ", ".join(f"{n} ({why})" for why, n in self.problems.items())
        return text


def _check_cancel(cancel: Cancel) -> None:
    if cancel is not None and cancel():
        raise Cancelled("embedding cancelled; no output was written")


def _space(model, space, mode: str) -> tuple[Callable[[np.ndarray], np.ndarray], EmbeddingSpace]:
    """The space of the vectors: the model's for this query mode ("" for photos and locations), or that of an
    embedding raster (`space`) whose PCA they then go through, so they compare with its pixels."""
    own = EmbeddingSpace.of_model(model, mode)
    if space is None:
        return (lambda v: v), own
    with EmbeddingRaster(space) as er:
        check_same_space(own, er, names=("these embeddings", Path(space).name), ignore_pca=True)
        pca = er.pca
    return (pca.transform if pca is not None else (lambda v: v)), replace(own, pca=er.meta.space.pca)


def _finish(layer: VectorLayer, output, vectors: np.ndarray, status: np.ndarray, model, space, modality: str,
            mode: str, extra_meta: dict[str, str], layer_name: str | None) -> LayerResult:
    project, vector_space = _space(model, space, mode)
    ok = status == OK
    out = np.full((len(layer), 0), np.nan, np.float32)
    if len(layer):
        reduced = project(vectors[ok]) if ok.any() else project(np.zeros((1, vectors.shape[1]), np.float32))[:0]
        out = np.full((len(layer), reduced.shape[1]), np.nan, np.float32)
        out[ok] = reduced
    meta = {**embedding_tags(vector_space, out.shape[1], vectors.shape[1], modality), **extra_meta}
    path = write_features(output, layer, out, status, meta, layer_name)
    problems = dict(Counter(s.split(":")[0] for s in status if s != OK))
    result = LayerResult(Path(path), len(layer), int(ok.sum()), problems, vector_space.id)
    if problems:
        warnings.warn(f"{layer.path.name}: {result.summary()}", stacklevel=3)
    return result


# ---- Sentinel-2 embeddings at points and polygons -------------------------------------------------------------
@dataclass
class _CropTask:
    feature: int
    window: object          # rasterio Window in source pixels
    rel: tuple[float, float]  # point query inside the crop (x from west, y from north)


@dataclass
class _PolygonTask:
    feature: int
    rows: tuple[int, int]   # raster pixels [first, end) of the polygon's bounding window
    cols: tuple[int, int]
    inside: np.ndarray      # (rows, cols) bool: pixels inside the polygon with valid data


def _point_task(src: SourceRaster, feature: int, x: float, y: float) -> _CropTask | str:
    """A crop of the model's ground size centred on the point, shifted inside the raster (the reference's rule)."""
    from rasterio.windows import Window

    t = src.ds.transform
    col, row = ~t * (x, y)
    if not (0 <= col < src.width and 0 <= row < src.height):
        return "outside raster"
    rows, cols = src.crop_size_px(src.res_m)
    row0 = int(np.clip(int(row) - rows // 2, 0, max(0, src.height - rows)))
    col0 = int(np.clip(int(col) - cols // 2, 0, max(0, src.width - cols)))
    h, w = min(rows, src.height - row0), min(cols, src.width - col0)
    return _CropTask(feature, Window(col0, row0, w, h), rel=((col - col0) / w, (row - row0) / h))


def _polygon_task(src: SourceRaster, feature: int, geom) -> _PolygonTask | str:
    """The polygon's pixels (centres inside, else any touched) with valid data, in its bounding window."""
    from rasterio.features import geometry_mask
    from rasterio.windows import Window

    inv = ~src.ds.transform
    xmin, ymin, xmax, ymax = geom.bounds
    c0, r0 = inv * (xmin, ymax)
    c1, r1 = inv * (xmax, ymin)
    c0, r0 = max(0, math.floor(c0)), max(0, math.floor(r0))
    c1, r1 = min(src.width, math.ceil(c1)), min(src.height, math.ceil(r1))
    if c0 >= c1 or r0 >= r1:
        return "outside raster"
    window = Window(c0, r0, c1 - c0, r1 - r0)
    transform = src.ds.window_transform(window)
    inside = geometry_mask([geom], (r1 - r0, c1 - c0), transform, invert=True)
    if not inside.any():
        inside = geometry_mask([geom], (r1 - r0, c1 - c0), transform, invert=True, all_touched=True)
    inside &= src.valid(window, (r1 - r0, c1 - c0))
    if not inside.any():
        return "nodata"
    return _PolygonTask(feature, (r0, r1), (c0, c1), inside)


def _encode_points(model, src: SourceRaster, tasks: list[_CropTask], vectors: np.ndarray, status: np.ndarray,
                   mode: str, batch_size: int, cancel: Cancel) -> None:
    """Read, preprocess and encode the points' crops in batches; each point queries its crop's token grid."""
    from ..runtime.preprocess import preprocess_rs

    cfg = model.config
    for k in range(0, len(tasks), batch_size):
        _check_cancel(cancel)
        batch, inputs = [], []
        for task in tasks[k:k + batch_size]:
            data, valid = src.read(task.window)
            r = min(int(task.rel[1] * valid.shape[0]), valid.shape[0] - 1)
            c = min(int(task.rel[0] * valid.shape[1]), valid.shape[1] - 1)
            if not valid[r, c]:  # the point itself must be on valid data
                status[task.feature] = "nodata"
                continue
            batch.append(task)
            inputs.append(preprocess_rs(data, cfg)[0])
        if not batch:
            continue
        tokens = np.asarray(model.rs_tokens(np.stack(inputs)), np.float32)
        rel = np.array([[task.rel] for task in batch], dtype=np.float64)
        out = np.asarray(model.query_tokens(tokens, rel, mode=mode))[:, 0]
        for task, vec in zip(batch, out):
            vectors[task.feature] = vec


class _PolygonMeans:
    """Polygon means of embed_raster's field (same lattice, same crops kept), crops' tokens shared between
    neighbouring polygons while they fit a budget."""

    TOKEN_BUDGET = 512  # crops' tokens kept (~0.2 GB at the official size)

    def __init__(self, model, src: SourceRaster, overlap: float, mode: str, batch_size: int, cancel: Cancel) -> None:
        from .blend import LatticeField
        from .distributed import Shard
        from .raster import _kept_crops, _RasterJob, raster_lattice

        grid = src.output_grid(None)
        lattice = raster_lattice(grid, *src.crop_size_px(grid.res_m), overlap, model.config.rs_grid)
        keep = _kept_crops(src, grid, lattice, MIN_VALID)
        self.job = _RasterJob(model, src, grid, lattice, keep, model.config.embed_dim, mode, batch_size, Shard(),
                              None, cancel)
        self.field = LatticeField(model, lattice, mode, None)

    def mean(self, task: _PolygonTask) -> np.ndarray | None:
        job = self.job
        ids = [i for i in job.lattice.touching(*task.rows, *task.cols) if job.keep[i]]
        job.encode(ids)
        vector = self.field.mean({i: job.tokens[i] for i in ids}, *task.rows, *task.cols, task.inside)
        for old in list(job.tokens)[:max(0, len(job.tokens) - self.TOKEN_BUDGET)]:
            job.tokens.pop(old)
            job.encoded.discard(old)
        return vector


@guarded
def embed_features(raster: str | os.PathLike, layer: str | os.PathLike, output: str | os.PathLike, model=None, *,
                 layer_name: str | None = None, bands=None, polygons: str = "mean", space=None, mode: str = "nili",
                 overlap: float = RASTER_OVERLAP, batch_size: int | None = None, progress: Progress = None,
                 cancel: Cancel = None) -> LayerResult:
    """GeoPackage of `layer` + the GAIR embedding of `raster` at each feature.

    Points (and lines, multipoints: their centroid): the NILI embedding at the point of a crop centred on it.
    Polygons: the mean of the blended field over the pixels inside (polygons="centroid": at the centroid).
    space: an embedding raster whose PCA the vectors go through, so they compare with its pixels.
    """
    import shapely

    if polygons not in ("mean", "centroid"):
        raise GAIRError(f"polygons must be 'mean' or 'centroid', got {polygons!r}")
    model = as_model(model)
    if polygons == "mean" and mode not in FIELD_MODES:
        raise GAIRError(f"polygon means average the raster field, which query mode {mode!r} does not make; use "
                        f"one of {', '.join(FIELD_MODES)}, or polygons='centroid'")
    features = read_layer(layer)
    if features.crs is None:
        raise GAIRError(f"{features.path.name} has no CRS, so its features cannot be placed on the raster; "
                        "assign one (in QGIS: Layer > Set CRS, then save) and retry")
    vectors = np.zeros((len(features), model.config.embed_dim), np.float32)
    status = np.full(len(features), OK, dtype=object)
    batch_size = batch_size or default_batch_size(model)
    with numpy_blas_beside(model), SourceRaster(raster, model.config, bands) as src:
        geoms = reproject(features.geometries, features.crs, src.ds.crs)
        means = None
        for start in range(0, len(features), CHUNK):
            points: list[_CropTask] = []
            for i in range(start, min(start + CHUNK, len(features))):
                geom = geoms[i]
                if geom is None or shapely.is_empty(geom):
                    status[i] = "empty geometry"
                    continue
                if is_polygonal(geom) and polygons == "mean":
                    made = _polygon_task(src, i, geom)
                    if not isinstance(made, str):
                        _check_cancel(cancel)
                        means = means or _PolygonMeans(model, src, overlap, mode, batch_size, cancel)
                        vector = means.mean(made)
                        made = "nodata" if vector is None else vector
                        if not isinstance(made, str):
                            vectors[i] = made
                            continue
                else:
                    point = geom if is_point(geom) else shapely.centroid(geom)
                    made = _point_task(src, i, point.x, point.y)
                if isinstance(made, str):
                    status[i] = made
                else:
                    points.append(made)
            _encode_points(model, src, points, vectors, status, mode, batch_size, cancel)
            if progress is not None:
                progress(min(start + CHUNK, len(features)) / max(1, len(features)))
        if (status == "outside raster").all() and len(features):
            warnings.warn(f"every feature of {features.path.name} lies outside {Path(src.path).name}: is the layer's "
                          f"CRS ({features.crs.name}) right?", stacklevel=2)
    return _finish(features, output, vectors, status, model, space, "rs", mode,
                   {"GAIR_POLYGONS": polygons, "GAIR_SOURCE": Path(raster).name}, layer_name)


def _batches(n: int, size: int) -> Iterator[range]:
    for k in range(0, n, size):
        yield range(k, min(n, k + size))


# ---- street-view photos and locations ----------------------------------------------------------------------------
def _photo_path(value, base: Path) -> Path | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip():
        return None
    path = Path(str(value).strip()).expanduser()
    return path if path.is_absolute() else base / path


@guarded
def embed_photos(layer: str | os.PathLike, output: str | os.PathLike, model=None, *, photo_field: str = "photo",
                 photo_root: str | os.PathLike | None = None, layer_name: str | None = None, aligned: bool = False,
                 space=None, batch_size: int = 16, progress: Progress = None, cancel: Cancel = None) -> LayerResult:
    """GeoPackage of `layer` + the street-view embedding of the photo each feature names in `photo_field`
    (absolute, or relative to `photo_root`, by default the layer file's folder). aligned=True: the projection
    trained against RS crops."""
    from ..runtime.preprocess import load_photo, preprocess_sv

    model = as_model(model)
    features = read_layer(layer)
    if photo_field not in features.fields:
        raise GAIRError(f"{features.path.name} has no field {photo_field!r} with photo paths; its fields are "
                        f"{sorted(features.fields)}. Name the right one with --photo-field")
    vectors = np.zeros((len(features), model.config.embed_dim), np.float32)
    status = np.full(len(features), OK, dtype=object)
    base = Path(photo_root).expanduser() if photo_root else features.path.parent
    for batch in _batches(len(features), batch_size):
        _check_cancel(cancel)
        rows, inputs = [], []
        for i in batch:
            path = _photo_path(features.fields[photo_field][i], base)
            if path is None:
                status[i] = "no photo path"
                continue
            try:
                inputs.append(preprocess_sv(load_photo(path), model.config))
                rows.append(i)
            except GAIRError as exc:  # not a regular file, unreadable, too large: flagged, the others go on
                status[i] = f"unreadable photo: {exc}"
            except Exception as exc:  # noqa: BLE001 - any unreadable/undecodable file is reported per feature
                status[i] = f"unreadable photo: {path} ({type(exc).__name__}: {exc})"
        if rows:
            vectors[rows] = np.asarray(model.encode_sv(np.concatenate(inputs), aligned=aligned))
        if progress is not None:
            progress(batch.stop / max(1, len(features)))
    return _finish(features, output, vectors, status, model, space, "sv_aligned" if aligned else "sv", "",
                   {"GAIR_PHOTO_FIELD": photo_field}, layer_name)


@guarded
def embed_locations(layer: str | os.PathLike, output: str | os.PathLike, model=None, *,
                    layer_name: str | None = None, space=None, batch_size: int = 4096, progress: Progress = None,
                    cancel: Cancel = None) -> LayerResult:
    """GeoPackage of `layer` + the location embedding of each feature's lon/lat (centroid for non-points)."""
    import shapely

    model = as_model(model)
    features = read_layer(layer)
    if features.crs is None:
        raise GAIRError(f"{features.path.name} has no CRS, so its coordinates cannot be turned into lon/lat; "
                        "assign one (in QGIS: Layer > Set CRS, then save) and retry")
    geoms = reproject(features.geometries, features.crs, "EPSG:4326")
    lonlat = np.full((len(features), 2), np.nan)
    status = np.full(len(features), OK, dtype=object)
    for i, geom in enumerate(geoms):
        if geom is None or shapely.is_empty(geom):
            status[i] = "empty geometry"
            continue
        point = geom if is_point(geom) else shapely.centroid(geom)
        lonlat[i] = point.x, point.y
        if not (np.isfinite(lonlat[i]).all() and abs(lonlat[i, 1]) <= 90):
            status[i] = "invalid coordinates"
    vectors = np.zeros((len(features), model.config.embed_dim), np.float32)
    ok = np.flatnonzero(status == OK)
    for batch in _batches(len(ok), batch_size):
        _check_cancel(cancel)
        rows = ok[batch.start:batch.stop]
        vectors[rows] = np.asarray(model.encode_location(lonlat[rows]))
        if progress is not None:
            progress(batch.stop / max(1, len(ok)))
    return _finish(features, output, vectors, status, model, space, "location", "", {}, layer_name)
