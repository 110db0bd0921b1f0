"""Unsupervised classes: k-means fitted on a pixel sample, applied to the whole raster in blocks."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import Cancelled, GAIRError
from ..io.embedding_raster import EmbeddingRaster, sample_pixels
from ..io.guard import guarded
from ..io.vectors import write_gpkg
from .rasters import CLASS_NODATA, MAX_CLASSES, OutputRaster, stage

SILHOUETTE_SAMPLE = 3000


@dataclass
class ClusterResult:
    path: Path
    k: int
    counts: list[int]  # pixels per class 1..k
    silhouettes: dict[int, float] = field(default_factory=dict)  # per k tried (automatic k only)
    inertia: float = 0.0
    sample_size: int = 0
    polygons_path: Path | None = None
    polygons: int = 0
    seconds: float = 0.0


def fit_kmeans(sample: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """Centroids (k, K) ordered by cluster size in the sample (largest = class 1), and the sample inertia."""
    from sklearn.cluster import MiniBatchKMeans

    check_k(k, len(sample))
    km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=min(4096, len(sample)),
                         max_iter=200).fit(sample)
    sizes = np.bincount(km.labels_, minlength=k)
    order = np.lexsort((np.arange(k), -sizes))
    return np.ascontiguousarray(km.cluster_centers_[order], dtype=np.float32), float(km.inertia_)


def check_k(k: int, samples: int, automatic: bool = False) -> None:
    """Refuse a k (or the top of an automatic range) the class raster cannot hold or the sample cannot support,
    before any fitting: an automatic range would otherwise fit every smaller k first."""
    what = f"automatic k up to {k}" if automatic else f"{k} clusters"
    if not 2 <= k < MAX_CLASSES:
        raise GAIRError(f"k must be between 2 and {MAX_CLASSES - 1}, got {k}")
    if samples < 10 * k:
        raise GAIRError(f"{samples} valid sample pixels are too few for {what} (k-means needs >= {10 * k}); "
                        f"use a larger sample, or a k of at most {max(samples // 10, 1)}")


def choose_k(sample: np.ndarray, k_min: int, k_max: int, seed: int = 0, cancel: Callable[[], bool] | None = None,
             progress: Callable[[float], None] | None = None) -> tuple[int, dict[int, float]]:
    """The k in [k_min, k_max] with the best silhouette on (a subsample of) the sample."""
    from sklearn.metrics import silhouette_score

    if not 2 <= k_min <= k_max:
        raise GAIRError(f"automatic k needs 2 <= k_min <= k_max, got {k_min}..{k_max}")
    check_k(k_max, len(sample), automatic=True)
    rng = np.random.default_rng(seed)
    sub = sample[rng.choice(len(sample), min(SILHOUETTE_SAMPLE, len(sample)), replace=False)]
    scores: dict[int, float] = {}
    for k in range(k_min, k_max + 1):
        if cancel is not None and cancel():
            raise Cancelled("cancelled while choosing k")
        centroids, _ = fit_kmeans(sample, k, seed)
        labels = assign(np.ascontiguousarray(sub.T), centroids)
        scores[k] = float(silhouette_score(sub, labels)) if len(np.unique(labels)) > 1 else -1.0
        if progress is not None:
            progress((k - k_min + 1) / (k_max - k_min + 1))
    return max(scores, key=lambda k: (scores[k], -k)), scores


def assign(bands: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Class (1..k, uint8) of the nearest centroid per pixel column of a (K, n) block; 0 for NaN columns.

    One BLAS product per block: the nearest centroid maximises x.c - |c|^2 / 2.
    """
    scores = centroids @ bands
    scores -= 0.5 * np.einsum("ij,ij->i", centroids, centroids)[:, None]
    # a running max over the k rows: contiguous passes, several times faster than argmax along axis 0
    best, labels = scores[0].copy(), np.ones(scores.shape[1], np.uint8)
    for j in range(1, len(scores)):
        better = scores[j] > best
        np.copyto(best, scores[j], where=better)
        labels[better] = j + 1
    labels[np.isnan(scores[0])] = CLASS_NODATA
    return labels


def assign_raw(raw: np.ndarray, centroids: np.ndarray, to_float: Callable[[np.ndarray, np.ndarray], np.ndarray],
               chunk: int = 16384) -> np.ndarray:
    """`assign` over a (K, n) block of stored values, dequantised (EmbeddingRaster.to_float) one chunk at a time."""
    labels = np.empty(raw.shape[1], np.uint8)
    scratch = np.empty((raw.shape[0], min(chunk, raw.shape[1])), np.float32)
    for start in range(0, raw.shape[1], chunk):
        labels[start:start + chunk] = assign(to_float(raw[:, start:start + chunk], scratch), centroids)
    return labels


@guarded
def cluster_embeddings(raster_path: str | os.PathLike, out_path: str | os.PathLike, *, k: int = 8,
                   auto_k: bool = False, sample_size: int = 20000, seed: int = 0,
                   polygons_path: str | os.PathLike | None = None, sieve_pixels: int = 0,
                   block_size: int | None = None, progress: Callable[[float], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> ClusterResult:
    """Byte class raster (0 = nodata, 1..k, colour table) from k-means; optionally the classes as polygons.

    `auto_k` picks k between 2 and `k` by silhouette on the sample. `sieve_pixels` merges polygon pieces smaller than
    that many pixels into their neighbours (polygons only; the raster keeps every pixel's class).
    """
    started = time.perf_counter()
    with EmbeddingRaster(raster_path) as raster:
        sample, _, _ = sample_pixels(raster, sample_size, seed, cancel, stage(progress, 0.0, 0.1))
        silhouettes: dict[int, float] = {}
        check_k(int(k), len(sample), automatic=auto_k)
        if auto_k:
            k, silhouettes = choose_k(sample, 2, int(k), seed, cancel,
                                      stage(progress, 0.1, 0.5))
        centroids, inertia = fit_kmeans(sample, int(k), seed)
        if progress is not None:
            progress(0.55)
        out = OutputRaster(out_path, raster, "classes", "uint8", CLASS_NODATA, "k-means class",
                           tags={"GAIR_KMEANS_K": str(k), "GAIR_SEED": str(seed)},
                           class_names=[f"cluster {i}" for i in range(1, k + 1)])
        counts = np.zeros(k + 1, np.int64)
        polygons, polygons_written = 0, False
        polygons_existed = polygons_path is not None and Path(polygons_path).exists()  # its other layers stay
        try:
            for window, block in raster.iter_blocks(block_size, stage(progress, 0.55, 0.9 if polygons_path else 1.0),
                                                    cancel, raw=True):
                labels = assign_raw(block.reshape(raster.dims, -1), centroids, raster.to_float)
                counts += np.bincount(labels, minlength=k + 1)
                out.write(window, labels)
            out.close()
            if polygons_path is not None:
                polygons = _write_class_polygons(out.tmp, polygons_path, raster.crs, sieve_pixels, cancel)
                polygons_written = True
            out.commit()
        except BaseException:
            out.abort()
            if polygons_written and not polygons_existed:
                Path(polygons_path).unlink(missing_ok=True)
            raise
    if progress is not None:
        progress(1.0)
    return ClusterResult(Path(out_path), int(k), counts[1:].tolist(), silhouettes, inertia, len(sample),
                         Path(polygons_path) if polygons_path else None, polygons, time.perf_counter() - started)


def _write_class_polygons(class_path: Path, polygons_path, crs, sieve_pixels: int,
                          cancel: Callable[[], bool] | None) -> int:
    """Vectorise a class raster (whole array: polygons must cross block edges) to a GeoPackage."""
    import rasterio
    import shapely
    from rasterio.features import shapes, sieve
    from shapely.geometry import shape

    with rasterio.open(class_path) as ds:
        classes = ds.read(1)
        transform = ds.transform
    if sieve_pixels > 1:
        valid = classes != CLASS_NODATA
        classes = np.where(valid, sieve(classes, size=int(sieve_pixels), mask=valid), CLASS_NODATA)
    geoms, values = [], []
    for i, (geom, value) in enumerate(shapes(classes, mask=classes != CLASS_NODATA, transform=transform)):
        if i % 10000 == 0 and cancel is not None and cancel():
            raise Cancelled("cancelled while writing polygons")
        geoms.append(shape(geom))
        values.append(int(value))
    if not geoms:
        raise GAIRError("the class raster has no valid pixels to turn into polygons")
    geoms = np.array(geoms, dtype=object)
    values = np.array(values, np.int32)
    fields = {"class": values, "name": np.array([f"cluster {v}" for v in values], dtype=object),
              "area": shapely.area(geoms)}
    write_gpkg(polygons_path, geoms, fields, crs, layer="clusters")
    return len(geoms)
