"""Change between two dates: per-pixel cosine distance of two embedding rasters, an Otsu change mask, changed areas.

The rasters must hold comparable vectors (same embedding space and dims) on one pixel grid where they overlap; the
outputs cover the overlap. Distances are written block by block; the mask threshold comes from a histogram of all
of them (Otsu's: the cut that maximises the between-class variance of 'unchanged' and 'changed'), and connected
changed pixels become polygons ranked by their total change (pixels x mean distance).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import GAIRError
from ..io.blocks import block_windows, walk
from ..io.embedding_raster import EmbeddingRaster, default_block_size
from ..io.guard import guarded
from ..io.space import check_same_space
from ..io.vectors import reproject, write_gpkg
from .rasters import MASK_NODATA, OutputRaster, all_or_nothing, stage

HISTOGRAM_BINS = 4000  # over cosine distances 0..2: 0.0005 per bin, finer than any threshold worth telling apart
ALIGN_TOLERANCE_PX = 1e-3  # grid origins this close to a whole number of pixels count as aligned
EQUAL_AREA_CRS = "EPSG:6933"  # areas of changed polygons in m2, whatever the rasters' CRS


@dataclass
class ChangeArea:
    rank: int
    mean_change: float
    max_change: float
    pixels: int
    area_m2: float
    x: float  # centroid, raster CRS
    y: float


@dataclass
class ChangeResult:
    path: Path
    threshold: float
    threshold_method: str  # "otsu" or "given"
    separation: float  # Otsu's effectiveness: between-class / total variance of the distances (1 = two clean groups)
    valid_pixels: int
    changed_pixels: int
    width: int
    height: int
    mask_path: Path | None = None
    polygons_path: Path | None = None
    areas: list[ChangeArea] = field(default_factory=list)
    seconds: float = 0.0


def otsu_threshold(counts: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    """Otsu's threshold of a histogram (the upper edge of the 'low' class) and its separation (eta, 0..1).

    Where several cuts separate equally well (empty bins between the groups), the middle one is taken."""
    counts = np.asarray(counts, np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    total = counts.sum()
    if total == 0:
        raise GAIRError("no pixel is valid in both rasters where they overlap; nothing to compare")
    w0 = np.cumsum(counts)[:-1]
    w1 = total - w0
    m0 = np.cumsum(counts * centres)[:-1]
    mean = (counts * centres).sum() / total
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (m0 / w0 - (mean * total - m0) / w1) ** 2 / total**2
    between = np.where((w0 > 0) & (w1 > 0), between, -1.0)
    if not (between > 0).any():  # one value throughout (two identical rasters): nothing is above it
        return float(edges[np.flatnonzero(counts)[-1] + 1]), 0.0
    top = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # equal cuts span an empty gap of the histogram:
    run = top[: int(np.argmax(np.diff(np.append(top, top[-1] + 2)) > 1)) + 1]  # its first run of equal cuts,
    best = int(run[len(run) // 2])  # cut in the middle of the gap, not at the edge of the lower group
    variance = (counts * (centres - mean) ** 2).sum() / total
    separation = float(between[best] / variance) if variance > 0 and between[best] > 0 else 0.0
    return float(edges[best + 1]), separation


def overlap_windows(a: EmbeddingRaster, b: EmbeddingRaster):
    """(window of a, window of b) covering the pixels both rasters hold; refuses grids that do not line up."""
    from rasterio.windows import Window

    names = f"{a.path.name} and {b.path.name}"
    if a.crs != b.crs:
        raise GAIRError(f"{names} are in different CRSs ({a.crs} vs {b.crs}); embed both on the same grid "
                        "(same CRS and pixel size) to compare them")
    ta, tb = a.transform, b.transform
    if ta.b or ta.d or tb.b or tb.d:
        raise GAIRError(f"{names}: rotated grids are not supported; embed both on a north-up grid")
    if not (np.isclose(ta.a, tb.a, rtol=1e-6) and np.isclose(ta.e, tb.e, rtol=1e-6)):
        raise GAIRError(f"{names} have different pixel sizes ({ta.a:g} x {-ta.e:g} vs {tb.a:g} x {-tb.e:g}); embed "
                        "both at the same pixel size (--pixel-size) to compare them")
    dx, dy = (tb.c - ta.c) / ta.a, (tb.f - ta.f) / ta.e
    if abs(dx - round(dx)) > ALIGN_TOLERANCE_PX or abs(dy - round(dy)) > ALIGN_TOLERANCE_PX:
        raise GAIRError(f"{names} are not on the same pixel grid (their origins are {dx % 1:.3f}, {dy % 1:.3f} "
                        "pixels apart); embed the second date with the first's extent and pixel size")
    dx, dy = int(round(dx)), int(round(dy))
    c0, r0 = max(0, dx), max(0, dy)
    c1, r1 = min(a.width, dx + b.width), min(a.height, dy + b.height)
    if c1 <= c0 or r1 <= r0:
        raise GAIRError(f"{names} do not overlap; choose two rasters of the same place")
    return Window(c0, r0, c1 - c0, r1 - r0), Window(c0 - dx, r0 - dy, c1 - c0, r1 - r0)


def cosine_distance(xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """(K, n) x (K, n) float32 -> (n,) 1 - cosine, NaN where either side is nodata."""
    dots = np.einsum("kn,kn->n", xa, xb)
    norms = np.sqrt(np.einsum("kn,kn->n", xa, xa) * np.einsum("kn,kn->n", xb, xb))
    with np.errstate(invalid="ignore", divide="ignore"):
        distance = 1.0 - dots / np.maximum(norms, 1e-30)
    return np.clip(distance, 0.0, 2.0).astype(np.float32)  # NaN stays NaN


def _check_comparable(a: EmbeddingRaster, b: EmbeddingRaster) -> None:
    if a.dims != b.dims:
        raise GAIRError(f"{a.path.name} has {a.dims} dims and {b.path.name} {b.dims}: they are in different "
                        "embedding spaces; embed both with the same model and dims to compare them")
    check_same_space(a, b, (a.path.name, b.path.name))


def _shifted(window, base):
    from rasterio.windows import Window

    return Window(int(window.col_off) + int(base.col_off), int(window.row_off) + int(base.row_off),
                  int(window.width), int(window.height))


@guarded
def change(before_path: str | os.PathLike, after_path: str | os.PathLike, out_path: str | os.PathLike, *,
           threshold: float | None = None, mask_path: str | os.PathLike | None = None,
           polygons_path: str | os.PathLike | None = None, top_areas: int = 20, min_area_px: int = 4,
           block_size: int | None = None, progress: Callable[[float], None] | None = None,
           cancel: Callable[[], bool] | None = None) -> ChangeResult:
    """Cosine distance raster of two dates, the change mask (distance > threshold, Otsu's by default) and the
    top changed areas as polygons with their mean and max change."""
    import rasterio

    started = time.perf_counter()
    with EmbeddingRaster(before_path) as a, EmbeddingRaster(after_path) as b:
        _check_comparable(a, b)
        win_a, win_b = overlap_windows(a, b)
        height, width = int(win_a.height), int(win_a.width)
        tags = {"GAIR_BEFORE": a.path.name, "GAIR_AFTER": b.path.name}
        out = OutputRaster(out_path, a, "change", "float32", float("nan"), "cosine distance (change)", tags,
                           window=win_a)
        mask = OutputRaster(mask_path, a, "mask", "uint8", MASK_NODATA, "changed (1) / unchanged (0)", tags,
                            window=win_a) if mask_path is not None else None
        side = block_size or default_block_size(a)
        side = max(a.tile_shape[0], side // a.tile_shape[0] * a.tile_shape[0])
        windows = block_windows(height, width, side, side)
        edges = np.linspace(0.0, 2.0, HISTOGRAM_BINS + 1)
        counts = np.zeros(HISTOGRAM_BINS, np.int64)
        with all_or_nothing(out, mask):
            for window in walk(windows, stage(progress, 0.0, 0.6), cancel, "comparing the two dates"):
                xa = a.read_block(_shifted(window, win_a)).reshape(a.dims, -1)
                xb = b.read_block(_shifted(window, win_b)).reshape(b.dims, -1)
                distance = cosine_distance(xa, xb)
                out.write(window, distance)
                counts += np.histogram(distance[np.isfinite(distance)], bins=edges)[0]
            valid = int(counts.sum())
            if threshold is None:
                threshold, separation, method = *otsu_threshold(counts, edges), "otsu"
            else:
                separation, method = float("nan"), "given"
            out.ds.update_tags(GAIR_THRESHOLD=f"{threshold:.6g}", GAIR_THRESHOLD_METHOD=method)
            changed = np.zeros((height, width), bool) if polygons_path is not None else None
            n_changed = 0
            with rasterio.open(out.close()) as written:
                for window in walk(windows, stage(progress, 0.6, 0.8), cancel, "thresholding the change"):
                    distance = written.read(1, window=window)
                    hit = distance > threshold
                    n_changed += int(hit.sum())
                    if mask is not None:
                        mask.write(window, np.where(np.isfinite(distance), hit, MASK_NODATA).astype(np.uint8))
                    if changed is not None:
                        r0, c0 = int(window.row_off), int(window.col_off)
                        changed[r0:r0 + int(window.height), c0:c0 + int(window.width)] = hit
                areas = []
                if changed is not None:
                    areas = _changed_areas(changed, written, windows, a.crs, top_areas, min_area_px, cancel)
                    _write_areas(polygons_path, areas, a.crs)
    if progress is not None:
        progress(1.0)
    return ChangeResult(Path(out_path), float(threshold), method, separation, valid, n_changed, width, height,
                        Path(mask_path) if mask_path else None, Path(polygons_path) if polygons_path else None,
                        [area for area, _ in areas], time.perf_counter() - started)


def _changed_areas(changed: np.ndarray, distances, windows, crs, top: int, min_area: int,
                   cancel) -> list[tuple[ChangeArea, object]]:
    """Connected changed pixels (8-neighbours) -> the `top` areas of at least `min_area` pixels by total change,
    each with its polygon (raster CRS)."""
    import shapely
    from rasterio.features import shapes
    from scipy import ndimage

    labels, n = ndimage.label(changed, structure=np.ones((3, 3), bool))
    if n == 0 or top <= 0:
        return []
    sums = np.zeros(n + 1, np.float64)
    maxes = np.zeros(n + 1, np.float64)
    for window in walk(windows, None, cancel, "measuring the changed areas"):
        r0, c0 = int(window.row_off), int(window.col_off)
        lab = labels[r0:r0 + int(window.height), c0:c0 + int(window.width)].ravel()
        inside = lab > 0
        if inside.any():
            values = distances.read(1, window=window).ravel()[inside].astype(np.float64)
            sums += np.bincount(lab[inside], weights=values, minlength=n + 1)
            np.maximum.at(maxes, lab[inside], values)
    pixels = np.bincount(labels.ravel(), minlength=n + 1)
    eligible = np.flatnonzero(pixels >= min_area)
    eligible = eligible[eligible > 0]
    chosen = eligible[np.argsort(-sums[eligible], kind="stable")][:top]
    if len(chosen) == 0:
        return []
    keep = np.isin(labels, chosen)
    pieces: dict[int, list] = {}
    for geom, value in shapes(labels.astype(np.int32), mask=keep, connectivity=8, transform=distances.transform):
        pieces.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    polygons = [shapely.multipolygons(shapely.get_parts(shapely.union_all(pieces[int(label)])))
                for label in chosen]
    areas_m2 = shapely.area(reproject(np.array(polygons, dtype=object), crs, EQUAL_AREA_CRS))
    centroids = shapely.centroid(np.array(polygons, dtype=object))
    return [(ChangeArea(rank + 1, float(sums[label] / pixels[label]), float(maxes[label]), int(pixels[label]),
                        float(area), float(c.x), float(c.y)), polygon)
            for rank, (label, polygon, area, c) in enumerate(zip(chosen, polygons, areas_m2, centroids))]


def _write_areas(path, areas: list[tuple[ChangeArea, object]], crs) -> None:
    geoms = np.array([polygon for _, polygon in areas], dtype=object)
    records = [area for area, _ in areas]
    fields = {"rank": np.array([r.rank for r in records], np.int32),
              "mean_change": np.array([r.mean_change for r in records], np.float64),
              "max_change": np.array([r.max_change for r in records], np.float64),
              "pixels": np.array([r.pixels for r in records], np.int64),
              "area_m2": np.array([r.area_m2 for r in records], np.float64)}
    write_gpkg(path, geoms, fields, crs, layer="changed_areas", geometry_type="MultiPolygon")
