"""Pixels under features: from map coordinates to raster pixels, and the embedding vectors under points/polygons."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import GAIRError
from ..io.embedding_raster import EmbeddingRaster
from ..io.vectors import VectorLayer, crs_name, is_pointlike, reproject


def world_to_pixel(raster: EmbeddingRaster, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer (row, col) of the pixels holding map coordinates (may be outside the raster)."""
    cols, rows = ~raster.transform * (np.asarray(xs, np.float64), np.asarray(ys, np.float64))
    return np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)


def pixel_centres(raster: EmbeddingRaster, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = raster.transform * (np.asarray(cols, np.float64) + 0.5, np.asarray(rows, np.float64) + 0.5)
    return np.asarray(xs), np.asarray(ys)


def read_pixels_at(raster: EmbeddingRaster, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(N, K) vectors at pixel positions, reading each touched tile window once (NaN rows for nodata)."""
    from rasterio.windows import Window

    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    out = np.full((len(rows), raster.dims), np.nan, np.float32)
    th, tw = raster.tile_shape
    tile_ids = (rows // th) * ((raster.width + tw - 1) // tw) + cols // tw
    for tile in np.unique(tile_ids):
        idx = np.flatnonzero(tile_ids == tile)
        r0, c0 = rows[idx].min(), cols[idx].min()
        window = Window(c0, r0, cols[idx].max() - c0 + 1, rows[idx].max() - r0 + 1)
        out[idx] = raster.read_columns(window, (rows[idx] - r0) * int(window.width) + (cols[idx] - c0))
    return out


@dataclass
class Samples:
    """Pixel vectors gathered from a layer: X (n, K), the feature index each came from, and what was skipped."""

    vectors: np.ndarray
    feature_index: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    skipped_outside: int
    skipped_nodata: int


def samples_from_layer(raster: EmbeddingRaster, layer: VectorLayer) -> Samples:
    """Points -> the pixel under each; polygons -> every pixel whose centre is inside (at least the centroid's)."""
    import shapely
    from rasterio.features import geometry_mask
    from rasterio.windows import transform as window_transform

    geoms = reproject(layer.geometries, layer.crs, raster.crs)
    rows_all, cols_all, owner = [], [], []
    outside = 0
    for i, geom in enumerate(geoms):
        if geom is None or shapely.is_empty(geom):
            outside += 1
            continue
        if is_pointlike(geom):
            pts = shapely.get_coordinates(geom)
            r, c = world_to_pixel(raster, pts[:, 0], pts[:, 1])
        else:
            window = _clipped_window(raster, shapely.bounds(geom))
            if window is None:
                outside += 1
                continue
            transform = window_transform(window, raster.transform)
            inside = ~geometry_mask([geom], (int(window.height), int(window.width)), transform)
            r, c = np.nonzero(inside)
            r, c = r + int(window.row_off), c + int(window.col_off)
            if len(r) == 0:  # smaller than a pixel: use the pixel under its representative point
                p = shapely.get_coordinates(shapely.point_on_surface(geom))
                r, c = world_to_pixel(raster, p[:, 0], p[:, 1])
        keep = (r >= 0) & (r < raster.height) & (c >= 0) & (c < raster.width)
        if not keep.any():
            outside += 1
            continue
        rows_all.append(r[keep])
        cols_all.append(c[keep])
        owner.append(np.full(keep.sum(), i))
    if not rows_all:
        raise GAIRError(f"all {len(layer)} features of {layer.path.name} lie outside {raster.path.name}; "
                        f"check that the layer covers the raster and has the right CRS (layer CRS: "
                        f"{crs_name(layer.crs)}, raster CRS: {crs_name(raster.crs)})")
    rows, cols, owner = np.concatenate(rows_all), np.concatenate(cols_all), np.concatenate(owner)
    vectors = read_pixels_at(raster, rows, cols)
    valid = np.isfinite(vectors).all(axis=1)
    nodata_features = len(np.setdiff1d(np.unique(owner), np.unique(owner[valid])))
    if not valid.any():
        raise GAIRError(f"every feature of {layer.path.name} falls on nodata pixels of {raster.path.name}")
    return Samples(vectors[valid], owner[valid], rows[valid], cols[valid], outside, nodata_features)


def _clipped_window(raster: EmbeddingRaster, bounds):
    """The pixel window covering map bounds, clipped to the raster; None when they do not overlap."""
    from rasterio.windows import Window

    minx, miny, maxx, maxy = bounds
    cols, rows = ~raster.transform * (np.array([minx, maxx, minx, maxx]), np.array([miny, miny, maxy, maxy]))
    c0, r0 = max(int(np.floor(cols.min())), 0), max(int(np.floor(rows.min())), 0)
    c1, r1 = min(int(np.ceil(cols.max())), raster.width), min(int(np.ceil(rows.max())), raster.height)
    return Window(c0, r0, c1 - c0, r1 - r0) if c1 > c0 and r1 > r0 else None
