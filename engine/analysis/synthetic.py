"""Embedding rasters with planted structure and known answers, for tests, benchmarks and demos.

Pixels are `common + prototype[class] + noise` over Voronoi regions, plus small patches of a distinct "target"
vector (look-alikes that a similarity search must find) and a nodata corner.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.embedding_writer import EmbeddingRasterWriter, int16_scale_offset

SYNTHETIC_MODEL = "synthetic0000"


@dataclass
class PlantedRaster:
    path: Path
    classes: np.ndarray  # (H, W) int: class 0..n-1, -1 = nodata
    prototypes: np.ndarray  # (n_classes, K)
    target_vector: np.ndarray  # (K,)
    targets: np.ndarray  # (n_targets, 2) row, col of look-alike patch centres
    transform: object
    crs: str
    score: np.ndarray  # (H, W) planted regression target (NaN at nodata)


def make_planted_raster(path: str | os.PathLike, *, dims: int = 16, height: int = 96, width: int = 128,
                        n_classes: int = 4, regions: int = 24, n_targets: int = 5, target_patch: int = 3,
                        noise: float = 0.35, seed: int = 0, dtype: str = "float32", tile: int = 64,
                        crs: str = "EPSG:32633", pixel_m: float = 10.0, model: str = SYNTHETIC_MODEL,
                        nodata_corner: int = 8) -> PlantedRaster:
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    common = rng.normal(size=dims) * 0.5
    prototypes = rng.normal(size=(n_classes, dims))
    target_vector = rng.normal(size=dims) * 1.5
    sites = rng.uniform([0, 0], [height, width], size=(regions, 2))
    rr, cc = np.mgrid[0:height, 0:width]
    nearest = np.argmin((rr[..., None] - sites[:, 0]) ** 2 + (cc[..., None] - sites[:, 1]) ** 2, axis=-1)
    classes = np.arange(regions)[nearest] % n_classes
    pixels = common + prototypes[classes] + rng.normal(size=(height, width, dims)) * noise
    targets = _spread_points(rng, n_targets, height, width, margin=target_patch + nodata_corner,
                             min_gap=max(12, 4 * target_patch))
    half = target_patch // 2
    for r, c in targets:
        patch = (slice(r - half, r + half + 1), slice(c - half, c + half + 1))
        pixels[patch] = common + target_vector + rng.normal(size=(target_patch, target_patch, dims)) * noise * 0.5
    direction = rng.normal(size=dims) / np.sqrt(dims)
    score = (pixels - common) @ direction
    classes[:nodata_corner, :nodata_corner] = -1
    pixels[:nodata_corner, :nodata_corner] = np.nan
    score[:nodata_corner, :nodata_corner] = np.nan
    block = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)
    transform = from_origin(500000.0, 4100000.0 + height * pixel_m, pixel_m, pixel_m)
    scale = offset = None
    if dtype == "int16":
        scale, offset = int16_scale_offset(block.reshape(dims, -1).T)
    from rasterio.windows import Window

    with EmbeddingRasterWriter(path, width=width, height=height, crs=crs, transform=transform, dims=dims,
                               model=model, dtype=dtype, scale=scale, offset=offset, tile=tile,
                               crop_pixels=16, crop_ground_m=16 * pixel_m) as writer:
        writer.write(Window(0, 0, width, height), block)
    targets = np.array(targets, dtype=np.int64).reshape(-1, 2)
    return PlantedRaster(Path(path), classes, prototypes, target_vector, targets, transform, crs, score)


def _spread_points(rng: np.random.Generator, n: int, height: int, width: int, margin: int,
                   min_gap: int) -> list[tuple[int, int]]:
    chosen: list[tuple[int, int]] = []
    for _ in range(10000 if n > 0 else 0):
        r, c = int(rng.integers(margin, height - margin)), int(rng.integers(margin, width - margin))
        if all((r - a) ** 2 + (c - b) ** 2 >= min_gap**2 for a, b in chosen):
            chosen.append((r, c))
            if len(chosen) == n:
                break
    if len(chosen) == n:
        return chosen
    raise ValueError(f"cannot place {n} targets {min_gap} px apart in {height}x{width}")


def pixel_xy(planted: PlantedRaster, rows, cols) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates of pixel centres."""
    xs, ys = planted.transform * (np.asarray(cols, float) + 0.5, np.asarray(rows, float) + 0.5)
    return np.asarray(xs), np.asarray(ys)


def labelled_points(planted: PlantedRaster, per_class: int, seed: int = 1, avoid_targets: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random valid pixels per class away from region edges: (rows, cols, class index)."""
    rng = np.random.default_rng(seed)
    classes = planted.classes
    interior = np.zeros_like(classes, bool)
    interior[1:-1, 1:-1] = ((classes[1:-1, 1:-1] == classes[:-2, 1:-1]) & (classes[1:-1, 1:-1] == classes[2:, 1:-1])
                            & (classes[1:-1, 1:-1] == classes[1:-1, :-2]) & (classes[1:-1, 1:-1] == classes[1:-1, 2:]))
    if avoid_targets:
        for r, c in planted.targets:
            interior[max(r - 3, 0):r + 4, max(c - 3, 0):c + 4] = False
    rows, cols, labels = [], [], []
    for k in range(len(planted.prototypes)):
        r, c = np.nonzero(interior & (classes == k))
        pick = rng.choice(len(r), min(per_class, len(r)), replace=False)
        rows.extend(r[pick].tolist())
        cols.extend(c[pick].tolist())
        labels.extend([k] * len(pick))
    return np.array(rows), np.array(cols), np.array(labels)
