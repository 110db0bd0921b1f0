"""Searches only GAIR can do: where an embedding raster looks like a street-view photo, or like a location.

GAIR trained its street-view encoder (through `optical_proj`, the "aligned" output) and its location encoder against
the Sentinel-2 field it writes into embedding rasters, so a photo's or a location's vector compares with the raster's
pixels by cosine, as a pixel reference does. The query must come from the model that made the raster (same
fingerprint and options) and goes through the raster's PCA when it has one; the scan, top-k and mask are the pixel
similarity search's (engine.analysis.similarity.scan_references).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import GAIRError
from ..io.embedding_raster import EmbeddingRaster
from ..io.guard import guarded
from ..io.space import EmbeddingSpace
from ..io.vectors import is_point, read_layer, reproject
from .similarity import SimilarityResult, scan_references

LOG = logging.getLogger(__name__)
Progress = Callable[[float], None] | None
Cancel = Callable[[], bool] | None


def query_in_raster_space(model, raster: EmbeddingRaster, vectors: np.ndarray, what: str) -> np.ndarray:
    """(n, D) vectors of `model` -> the raster's space (through its PCA), or a GAIRError when the model is not the
    one that embedded the raster (the vectors would not be comparable with its pixels)."""
    own = EmbeddingSpace.of_model(model, "")  # photos and locations: no query mode, no NILI convention
    differences = own.differences(raster.meta.space, ignore_pca=True)
    if differences:
        raise GAIRError(f"the model (fingerprint {model.fingerprint[:12]}) did not make {raster.path.name} "
                        f"({'; '.join(differences)}): {what} from it do not compare with the raster's pixels; "
                        "pass the model that embedded the raster with --model (or in the GAIR settings)")
    if vectors.shape[1] != raster.meta.model_dims:
        raise GAIRError(f"{what} have {vectors.shape[1]} dims but {raster.path.name} was embedded from "
                        f"{raster.meta.model_dims}-dim vectors; use the model that embedded the raster")
    return raster.project(vectors)


def _scan(raster_path, out_path, model, vectors_of: Callable[[object], np.ndarray], what: str, kind: str,
          search: dict, progress: Progress, cancel: Cancel) -> SimilarityResult:
    from ..runtime.loading import load_model
    from ..runtime.protocol import GAIRModelLike

    started = time.perf_counter()
    with EmbeddingRaster(raster_path) as raster:  # a wrong raster is refused before a model is loaded
        model = model if isinstance(model, GAIRModelLike) else load_model(model)
        vectors = np.asarray(vectors_of(model), np.float32)
        references = query_in_raster_space(model, raster, vectors, what)
        return scan_references(raster, references, out_path, tags={"GAIR_QUERY": kind}, started=started,
                               progress=progress, cancel=cancel, **search)


# ---- photos ------------------------------------------------------------------------------------------------------
def photo_paths(photos: Sequence[str | os.PathLike] | None, photo_layer: str | os.PathLike | None,
                photo_field: str, layer: str | None) -> list[Path]:
    """The photo files: those given, then each feature's photo (absolute, or relative to the layer's folder)."""
    paths = [Path(p).expanduser() for p in photos or ()]
    if photo_layer is not None:
        features = read_layer(photo_layer, layer, require_crs=False)
        if photo_field not in features.fields:
            raise GAIRError(f"{features.path.name} has no field {photo_field!r} with photo paths; its fields are "
                            f"{sorted(features.fields)}. Name the right one with --photo-field")
        found = [_photo_path(v, features.path.parent) for v in features.fields[photo_field]]
        if not any(found):
            raise GAIRError(f"no feature of {features.path.name} names a photo in {photo_field!r}")
        paths += [p for p in found if p is not None]
    if not paths:
        raise GAIRError("give a street-view photo (--photo) or a point layer with a photo-path field (--photo-layer)")
    return paths


def _photo_path(value, base: Path) -> Path | None:
    """A feature's photo: None when the field is empty, relative paths from the layer's folder."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or not str(value).strip():
        return None
    path = Path(str(value).strip()).expanduser()
    return path if path.is_absolute() else base / path


def photo_vectors(model, paths: Sequence[Path], cancel: Cancel = None, batch_size: int = 16) -> np.ndarray:
    """(n, D) aligned street-view embeddings (the side of GAIR's RS-SV loss). An unreadable photo is an error:
    a search with one photo silently missing would answer another question."""
    from ..runtime.preprocess import load_photo, preprocess_sv
    from .rasters import check_cancel

    out = []
    for start in range(0, len(paths), batch_size):
        check_cancel(cancel, "embedding photos")
        inputs = []
        for path in paths[start:start + batch_size]:
            try:
                inputs.append(preprocess_sv(load_photo(path), model.config))
            except GAIRError:
                raise
            except Exception as exc:  # noqa: BLE001 - any undecodable file: one line naming it
                raise GAIRError(f"cannot read the photo {path} ({type(exc).__name__}: {exc}); give a JPEG or PNG "
                                "street-view photo") from exc
        out.append(np.asarray(model.encode_sv(np.concatenate(inputs), aligned=True), np.float32))
    return np.concatenate(out)


@guarded
def search_by_photo(raster_path: str | os.PathLike, out_path: str | os.PathLike, model=None, *,
                    photos: Sequence[str | os.PathLike] | None = None, photo_layer: str | os.PathLike | None = None,
                    photo_field: str = "photo", layer: str | None = None, aggregate: str = "mean", top_k: int = 10,
                    min_distance_px: int = 5, threshold: float | None = None,
                    mask_path: str | os.PathLike | None = None, hits_path: str | os.PathLike | None = None,
                    block_size: int | None = None, progress: Progress = None, cancel: Cancel = None
                    ) -> SimilarityResult:
    """Cosine similarity of every pixel to the aligned street-view embedding of the photo(s), top-k and mask."""
    paths = photo_paths(photos, photo_layer, photo_field, layer)
    search = dict(aggregate=aggregate, top_k=top_k, min_distance_px=min_distance_px, threshold=threshold,
                  mask_path=mask_path, hits_path=hits_path, block_size=block_size)
    return _scan(raster_path, out_path, model, lambda m: photo_vectors(m, paths, cancel), "street-view embeddings",
                 "photo", search, progress, cancel)


# ---- locations ---------------------------------------------------------------------------------------------------
def location_lonlat(locations: Sequence[tuple[float, float]] | None, locations_crs,
                    location_layer: str | os.PathLike | None, layer: str | None) -> np.ndarray:
    """(n, 2) [lon, lat] of the given locations (in locations_crs, default lon/lat) and the layer's features
    (any CRS; a line's or polygon's centroid)."""
    import shapely

    parts = []
    if locations:
        pts = shapely.points(np.asarray(locations, np.float64).reshape(-1, 2))
        if locations_crs is not None:
            pts = reproject(pts, locations_crs, "EPSG:4326")
        parts.append(shapely.get_coordinates(pts))
    if location_layer is not None:
        features = read_layer(location_layer, layer, require_crs=True)
        geoms = [g for g in reproject(features.geometries, features.crs, "EPSG:4326")
                 if g is not None and not shapely.is_empty(g)]
        if not geoms:
            raise GAIRError(f"{features.path.name} has no features with a geometry")
        parts.append(np.array([[p.x, p.y] for p in (g if is_point(g) else shapely.centroid(g) for g in geoms)]))
    if not parts:
        raise GAIRError("give a location (--location LON LAT) or a layer of points (--location-layer)")
    lonlat = np.concatenate(parts)
    bad = ~(np.isfinite(lonlat).all(axis=1) & (np.abs(lonlat[:, 1]) <= 90) & (np.abs(lonlat[:, 0]) <= 360))
    if bad.any():
        raise GAIRError(f"location(s) {np.flatnonzero(bad).tolist()} are not valid longitude/latitude "
                        f"({lonlat[bad][0].tolist()}); give LON LAT in degrees, or set --location-crs")
    return lonlat


@guarded
def search_by_location(raster_path: str | os.PathLike, out_path: str | os.PathLike, model=None, *,
                       locations: Sequence[tuple[float, float]] | None = None, locations_crs=None,
                       location_layer: str | os.PathLike | None = None, layer: str | None = None,
                       aggregate: str = "mean", top_k: int = 10, min_distance_px: int = 5,
                       threshold: float | None = None, mask_path: str | os.PathLike | None = None,
                       hits_path: str | os.PathLike | None = None, block_size: int | None = None,
                       progress: Progress = None, cancel: Cancel = None) -> SimilarityResult:
    """Cosine similarity of every pixel to the location encoder's embedding of the location(s), top-k and mask."""
    lonlat = location_lonlat(locations, locations_crs, location_layer, layer)
    search = dict(aggregate=aggregate, top_k=top_k, min_distance_px=min_distance_px, threshold=threshold,
                  mask_path=mask_path, hits_path=hits_path, block_size=block_size)
    return _scan(raster_path, out_path, model, lambda m: np.asarray(m.encode_location(lonlat), np.float32),
                 "location embeddings", "location", search, progress, cancel)
