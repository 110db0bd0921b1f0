"""Seam figure of an embedding raster: how much the sharpest line of change stands out from the typical change.

A step is the mean (along a column or row boundary) L2 distance between the vectors of neighbouring pixels. The seam
figure is the largest step over the median step, of columns and rows, the worse of the two. Land cover edges give
figures of a few; a frame at the raster border or a seam between crops stands out (before crops read context past
the extent and mirrored the scene at its edge: 9.0 on the Detroit sample, ~26 on larger rasters per issue 13).
"""
from __future__ import annotations

import os
import warnings

import numpy as np


def step_profile(field: np.ndarray, axis: int) -> np.ndarray:
    """(K, H, W) field -> mean L2 step between neighbouring pixels along `axis` (1: rows, 2: columns); entry j is the
    step between j and j + 1, averaged over the other axis (nodata pixels ignored)."""
    if axis not in (1, 2):
        raise ValueError(f"axis must be 1 (rows) or 2 (columns), got {axis}")
    steps = np.linalg.norm(np.diff(np.asarray(field, np.float32), axis=axis), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nodata lines give NaN, ignored by seam_figure
        return np.nanmean(steps, axis=1 if axis == 1 else 0)


def seam_figure(field: np.ndarray) -> float:
    """Worst step over the median step, the larger of columns and rows (1 for a uniform gradient)."""
    figures = []
    for axis in (1, 2):
        steps = step_profile(field, axis)
        steps = steps[np.isfinite(steps)]
        if len(steps) >= 2 and np.median(steps) > 0:
            figures.append(float(steps.max() / np.median(steps)))
    if not figures:
        raise ValueError("the field is too small or constant: no steps to compare")
    return max(figures)


def raster_seam_figure(path: str | os.PathLike) -> float:
    """The seam figure of an embedding raster file (decoded to float32 vectors)."""
    from rasterio.windows import Window

    from ..io.embedding_raster import EmbeddingRaster

    with EmbeddingRaster(path) as raster:
        return seam_figure(raster.read_block(Window(0, 0, raster.width, raster.height)))
