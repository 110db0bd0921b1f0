"""Cosine similarity to reference places: a streamed raster scan, top-k peaks, threshold mask (feature layers:
ranking.py).

The scan is a memory-bound matrix-vector product: references are normalised once, tile-aligned blocks are read
band-major (K, h*w) and processed in cache-sized column chunks so the dot product and the pixel norm share one
trip through memory.
"""
from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import GAIRError
from ..io.embedding_raster import EmbeddingRaster
from ..io.feature_layer import embedding_vectors, layer_embedding_meta
from ..io.guard import guarded
from ..io.space import check_same_space
from ..io.vectors import read_layer, reproject, require_layer_crs, write_gpkg
from ..params import AGGREGATES
from .pixels import pixel_centres, read_pixels_at, samples_from_layer, world_to_pixel
from .rasters import MASK_NODATA, OutputRaster, all_or_nothing, stage

CHUNK_COLUMNS = 4096  # pixels per chunk: long enough rows for BLAS, small enough to stay in cache for the norm
IN_MEMORY_PEAKS_PIXELS = 64 * 2**20  # similarity maps up to this size (256 MB) are kept in memory for the peaks


@dataclass
class SimilarityHit:
    rank: int
    score: float
    x: float
    y: float
    row: int
    col: int


@dataclass
class SimilarityResult:
    path: Path
    references: int
    hits: list[SimilarityHit] = field(default_factory=list)
    hits_path: Path | None = None
    mask_path: Path | None = None
    mask_pixels: int = 0
    valid_pixels: int = 0
    seconds: float = 0.0


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.atleast_2d(np.asarray(vectors, np.float32))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(norms > 0) or not np.isfinite(vectors).all():
        raise GAIRError("a reference vector is zero or not finite (a nodata pixel?); pick another reference")
    return np.ascontiguousarray(vectors / norms)


def query_matrix(references: np.ndarray, aggregate: str) -> np.ndarray:
    """(r, K) references -> the (m, K) unit rows the scan multiplies by: their normalised mean (m=1) or all (max)."""
    if aggregate not in AGGREGATES:
        raise GAIRError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    refs = unit_rows(references)
    return unit_rows(refs.mean(axis=0)) if aggregate == "mean" else refs


def cosine_scan(bands: np.ndarray, query: np.ndarray, out: np.ndarray | None = None,
                to_float: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """(K, n) band-major pixels x (m, K) unit query rows -> (n,) max cosine over the rows (NaN nodata).

    Column chunks keep the dot product and the pixel norms to one trip through memory for the block.
    `bands` is float32, or raw stored values with `to_float(raw_chunk, scratch)` (EmbeddingRaster.to_float)
    dequantising each chunk in cache: int8 blocks never exist as float32 in full.
    """
    n = bands.shape[1]
    out = np.empty(n, np.float32) if out is None else out
    q = np.ascontiguousarray(query[0] if len(query) == 1 else query, dtype=np.float32)
    scratch = np.empty((bands.shape[0], min(n, CHUNK_COLUMNS)), np.float32) if to_float is not None else None
    for start in range(0, n, CHUNK_COLUMNS):
        x = bands[:, start:start + CHUNK_COLUMNS]
        if to_float is not None:
            x = to_float(x, scratch)
        dots = q @ x if q.ndim == 1 else (q @ x).max(axis=0)
        norms = np.einsum("kn,kn->n", x, x)
        np.sqrt(norms, out=norms)
        np.maximum(norms, 1e-30, out=norms)
        np.divide(dots, norms, out=out[start:start + CHUNK_COLUMNS])
    return out


def reference_vectors(raster: EmbeddingRaster, points: Sequence[tuple[float, float]] | None = None,
                      points_crs=None, reference_layer: str | os.PathLike | None = None,
                      layer: str | None = None) -> np.ndarray:
    """References in the raster's space: points (x, y in points_crs, default the raster CRS), or a layer's
    features (a per-feature embedding layer's vectors, projected through the raster's PCA; otherwise the
    raster's vectors under each feature, a polygon's pixels averaged)."""
    refs = []
    if points:
        rows, cols = _point_pixels(raster, points, points_crs)
        vecs = read_pixels_at(raster, rows, cols)
        bad = ~np.isfinite(vecs).all(axis=1)
        if bad.any():
            raise GAIRError(f"reference point(s) {np.flatnonzero(bad).tolist()} fall on nodata pixels")
        refs.append(vecs)
    if reference_layer is not None:
        refs.append(_layer_references(raster, reference_layer, layer))
    if not refs:
        raise GAIRError("give reference points or a reference layer")
    return np.concatenate(refs)


def _point_pixels(raster: EmbeddingRaster, points, points_crs) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of points (x, y in points_crs, default the raster CRS); a point off the raster is an error."""
    import shapely

    pts = shapely.points(np.asarray(points, np.float64))
    if points_crs is not None:
        pts = reproject(pts, points_crs, raster.crs)
    xy = shapely.get_coordinates(pts)
    rows, cols = world_to_pixel(raster, xy[:, 0], xy[:, 1])
    inside = (rows >= 0) & (rows < raster.height) & (cols >= 0) & (cols < raster.width)
    if not inside.all():
        raise GAIRError(f"reference point(s) {np.flatnonzero(~inside).tolist()} lie outside {raster.path.name}; "
                        "check the coordinates and their CRS (lon/lat need points_crs='EPSG:4326')")
    return rows, cols


def reference_pixels(raster: EmbeddingRaster, points=None, points_crs=None, reference_layer=None,
                     layer: str | None = None) -> np.ndarray:
    """(n, 2) row/col of the places the references were taken from on this raster: the points, and the pixels
    under a plain layer's features. A per-feature embedding layer's vectors have no place on this raster."""
    places = []
    if points:
        places.append(np.stack(_point_pixels(raster, points, points_crs), axis=1))
    if reference_layer is not None:
        data = read_layer(reference_layer, layer, require_crs=False)
        if embedding_vectors(data) is None:
            samples = samples_from_layer(raster, data)
            places.append(np.stack([samples.rows, samples.cols], axis=1))
    return np.concatenate(places).astype(np.int64) if places else np.empty((0, 2), np.int64)


def _layer_references(raster: EmbeddingRaster, path, layer) -> np.ndarray:
    data = read_layer(path, layer, require_crs=False)
    vectors = embedding_vectors(data)
    if vectors is None:  # a plain layer: the raster's own vectors under each feature (polygons averaged)
        require_layer_crs(data)
        samples = samples_from_layer(raster, data)
        owners, inverse = np.unique(samples.feature_index, return_inverse=True)
        sums = np.zeros((len(owners), raster.dims), np.float64)
        np.add.at(sums, inverse, samples.vectors)
        return (sums / np.bincount(inverse)[:, None]).astype(np.float32)
    meta = layer_embedding_meta(data, vectors.shape[1])
    names = (Path(path).name, raster.path.name)
    if not meta.space.pca and raster.meta.space.pca:  # full-dims vectors, PCA-reduced raster: project them
        check_same_space(meta, raster, names, ignore_pca=True)
        return raster.project(vectors)
    check_same_space(meta, raster, names)
    return vectors


@guarded
def similarity_search(raster_path: str | os.PathLike, out_path: str | os.PathLike, *,
                      points: Sequence[tuple[float, float]] | None = None, points_crs=None,
                      reference_layer: str | os.PathLike | None = None, layer: str | None = None,
                      aggregate: str = "mean", top_k: int = 10, min_distance_px: int = 5,
                      exclude_radius_px: int | None = None,
                      threshold: float | None = None, mask_path: str | os.PathLike | None = None,
                      hits_path: str | os.PathLike | None = None, block_size: int | None = None,
                      progress: Callable[[float], None] | None = None,
                      cancel: Callable[[], bool] | None = None) -> SimilarityResult:
    """Cosine-similarity raster (float32, NaN nodata) to the references, its top-k peaks and a threshold mask.

    exclude_radius_px: top-k hits closer than this many pixels to a reference place (a point, a plain layer's
    feature pixels) are left out, so the reference does not find itself; default min_distance_px, 0 keeps them.
    """
    started = time.perf_counter()
    with EmbeddingRaster(raster_path) as raster:
        references = reference_vectors(raster, points, points_crs, reference_layer, layer)
        radius = min_distance_px if exclude_radius_px is None else exclude_radius_px
        excluded = (reference_pixels(raster, points, points_crs, reference_layer, layer) if radius > 0
                    else np.empty((0, 2), np.int64))
        return scan_references(raster, references, out_path, aggregate=aggregate, top_k=top_k,
                               min_distance_px=min_distance_px, excluded=excluded, exclude_radius_px=radius,
                               threshold=threshold, mask_path=mask_path, hits_path=hits_path, block_size=block_size,
                               started=started, progress=progress, cancel=cancel)


def scan_references(raster: EmbeddingRaster, references: np.ndarray, out_path: str | os.PathLike, *,
                    aggregate: str = "mean", top_k: int = 10, min_distance_px: int = 5,
                    excluded: np.ndarray | None = None, exclude_radius_px: float = 0,
                    threshold: float | None = None, mask_path: str | os.PathLike | None = None,
                    hits_path: str | os.PathLike | None = None, block_size: int | None = None,
                    tags: dict[str, str] | None = None, started: float | None = None,
                    progress: Callable[[float], None] | None = None,
                    cancel: Callable[[], bool] | None = None) -> SimilarityResult:
    """The scan every similarity search shares: (r, K) references in the raster's space -> the similarity raster,
    its top-k peaks (leaving out those within exclude_radius_px of an `excluded` (row, col)), the threshold mask."""
    if mask_path is not None and threshold is None:
        raise GAIRError("a mask needs a threshold (cosine similarity, e.g. 0.8)")
    started = time.perf_counter() if started is None else started
    query = query_matrix(references, aggregate)
    out = OutputRaster(out_path, raster, "similarity", "float32", float("nan"), "cosine similarity",
                       tags={"GAIR_AGGREGATE": aggregate, **(tags or {})})
    mask = OutputRaster(mask_path, raster, "mask", "uint8", MASK_NODATA, f"similarity >= {threshold}") \
        if mask_path is not None else None
    with all_or_nothing(out, mask):
        valid = masked = 0
        # cosine is scale-free: int8 chunks are cast to float without the 1/127 (one pass less)
        to_float = functools.partial(raster.to_float, unit=False)
        whole = (np.empty((raster.height, raster.width), np.float32)
                 if top_k > 0 and raster.height * raster.width <= IN_MEMORY_PEAKS_PIXELS else None)
        for window, block in raster.iter_blocks(block_size, stage(progress, 0.0, 0.9), cancel, raw=True):
            sim = cosine_scan(block.reshape(raster.dims, -1), query, to_float=to_float)
            out.write(window, sim)
            if whole is not None:
                whole[_slices(window)] = sim.reshape(int(window.height), int(window.width))
            finite = np.isfinite(sim)
            valid += int(finite.sum())
            if mask is not None:
                hit = sim >= threshold
                masked += int(hit.sum())
                mask.write(window, np.where(finite, hit, MASK_NODATA).astype(np.uint8))
        radius = exclude_radius_px if excluded is not None and len(excluded) else 0
        if top_k <= 0:
            hits = []
        elif whole is not None:
            hits = _hits(raster, _peaks_in_memory(whole, top_k, min_distance_px, threshold, excluded, radius))
        else:
            hits = _top_peaks(raster, out.close(), top_k, min_distance_px, threshold, excluded, radius)
        written_hits = _write_hits(hits_path, hits, raster.crs) if hits_path is not None and hits else None
    if progress is not None:
        progress(1.0)
    return SimilarityResult(Path(out_path), len(references), hits,
                            written_hits, Path(mask_path) if mask_path else None, masked, valid,
                            time.perf_counter() - started)


def _top_peaks(raster: EmbeddingRaster, sim_path: Path, top_k: int, min_distance: int,
               threshold: float | None, excluded: np.ndarray | None = None,
               exclude_radius: float = 0) -> list[SimilarityHit]:
    """Local maxima of the similarity raster, best first: no higher value in the (2r+1)^2 square around a hit
    (a separable filter, fast), then greedy suppression keeps hits at least r = min_distance pixels apart.
    Peaks closer than exclude_radius to an `excluded` (row, col) are dropped before the ranking."""
    import rasterio
    from rasterio.windows import Window
    from scipy.ndimage import maximum_filter

    r = max(int(min_distance), 1)
    candidates = []
    with rasterio.open(sim_path) as ds:
        for window in raster.windows():
            c0, r0 = max(int(window.col_off) - r, 0), max(int(window.row_off) - r, 0)
            c1 = min(int(window.col_off + window.width) + r, raster.width)
            r1 = min(int(window.row_off + window.height) + r, raster.height)
            sim = ds.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
            sim = np.where(np.isfinite(sim), sim, -np.inf)
            peak = (sim == maximum_filter(sim, size=2 * r + 1, mode="constant", cval=-np.inf)) & np.isfinite(sim)
            if threshold is not None:
                peak &= sim >= threshold
            core = np.zeros_like(peak)
            core[int(window.row_off) - r0:int(window.row_off + window.height) - r0,
                 int(window.col_off) - c0:int(window.col_off + window.width) - c0] = True
            rows, cols = np.nonzero(peak & core)
            if excluded is not None and len(excluded) and len(rows):
                near = _near_any(rows + r0, cols + c0, excluded, exclude_radius)
                rows, cols = rows[~near], cols[~near]
            scores = sim[rows, cols]
            best = np.argsort(-scores, kind="stable")[: 2 * top_k + 8]
            candidates += [(float(scores[i]), int(rows[i]) + r0, int(cols[i]) + c0) for i in best]
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    chosen: list[tuple[float, int, int]] = []
    for score, row, col in candidates:
        if all((row - rr) ** 2 + (col - cc) ** 2 >= r * r for _, rr, cc in chosen):
            chosen.append((score, row, col))
            if len(chosen) == top_k:
                break
    return _hits(raster, chosen)


def _slices(window) -> tuple[slice, slice]:
    r0, c0 = int(window.row_off), int(window.col_off)
    return slice(r0, r0 + int(window.height)), slice(c0, c0 + int(window.width))


def _peaks_in_memory(sim: np.ndarray, top_k: int, min_distance: int, threshold: float | None,
                     excluded: np.ndarray | None = None, exclude_radius: float = 0) -> list[tuple[float, int, int]]:
    """The peaks `_top_peaks` defines (local maxima of the (2r+1)^2 square, greedy r-pixel suppression, best first,
    ties row-major), from a map in memory without filtering all of it: pixels are visited from the highest down,
    in growing batches, and only those are checked for being a local maximum (~10x faster than the filter)."""
    r = max(int(min_distance), 1)
    height, width = sim.shape
    values = np.where(np.isfinite(sim), sim, -np.inf).ravel()
    if threshold is not None:
        values[values < threshold] = -np.inf
    padded = np.full((height + 2 * r, width + 2 * r), -np.inf, np.float32)
    padded[r:r + height, r:r + width] = values.reshape(height, width)
    offsets = np.arange(-r, r + 1)
    chosen: list[tuple[float, int, int]] = []
    done, batch = 0, 64 * top_k + 1024  # pixels visited so far (a prefix of the best-first order), next prefix size
    while len(chosen) < top_k and done < values.size:
        size = min(values.size, done + batch)
        kth = -np.partition(-values, size - 1)[size - 1]
        if kth == -np.inf:
            prefix = np.flatnonzero(values > -np.inf)
        else:
            prefix = np.flatnonzero(values >= kth)  # ties at the cut stay together
        prefix = prefix[np.lexsort((prefix, -values[prefix]))][done:]
        done += len(prefix)
        if len(prefix) == 0:
            break
        rows, cols = np.divmod(prefix, width)
        peak = np.empty(len(prefix), bool)
        step = max(1, 2**23 // len(offsets) ** 2)  # neighbourhoods of at most ~32 MB at a time
        for i in range(0, len(prefix), step):
            part = slice(i, i + step)
            neighbourhood = padded[rows[part, None, None] + r + offsets[None, :, None],
                                   cols[part, None, None] + r + offsets[None, None, :]]
            peak[part] = neighbourhood.max(axis=(1, 2)) <= values[prefix[part]]
        rows, cols, scores = rows[peak], cols[peak], values[prefix][peak]
        if excluded is not None and len(excluded) and len(rows):
            near = _near_any(rows, cols, excluded, exclude_radius)
            rows, cols, scores = rows[~near], cols[~near], scores[~near]
        for score, row, col in zip(scores.tolist(), rows.tolist(), cols.tolist()):
            if all((row - rr) ** 2 + (col - cc) ** 2 >= r * r for _, rr, cc in chosen):
                chosen.append((score, row, col))
                if len(chosen) == top_k:
                    break
        if kth == -np.inf:
            break
        batch *= 4
    return chosen


def _hits(raster: EmbeddingRaster, chosen: list[tuple[float, int, int]]) -> list[SimilarityHit]:
    xs, ys = pixel_centres(raster, [c[1] for c in chosen], [c[2] for c in chosen])
    return [SimilarityHit(i + 1, s, float(x), float(y), row, col)
            for i, ((s, row, col), x, y) in enumerate(zip(chosen, np.atleast_1d(xs), np.atleast_1d(ys)))]


def _near_any(rows: np.ndarray, cols: np.ndarray, places: np.ndarray, radius: float) -> np.ndarray:
    """Which (row, col) lie closer than `radius` pixels to any of `places` (n, 2), in chunks of places."""
    near = np.zeros(len(rows), bool)
    for start in range(0, len(places), 256):
        chunk = places[start:start + 256]
        d2 = (rows[:, None] - chunk[None, :, 0]) ** 2 + (cols[:, None] - chunk[None, :, 1]) ** 2
        near |= (d2 < radius * radius).any(axis=1)
    return near


def _write_hits(path, hits: list[SimilarityHit], crs) -> Path:
    import shapely

    geoms = shapely.points([h.x for h in hits], [h.y for h in hits])
    fields = {"rank": np.array([h.rank for h in hits], np.int32), "score": np.array([h.score for h in hits]),
              "row": np.array([h.row for h in hits], np.int32), "col": np.array([h.col for h in hits], np.int32)}
    return write_gpkg(path, geoms, fields, crs, layer="similar_places")
