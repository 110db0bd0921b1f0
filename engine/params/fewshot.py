"""The few-shot search operation (the map tool's positive/negative clicks, also a CLI command and a worker job)."""
from __future__ import annotations

from .definitions import Operation, Param
from .operations import EMBEDDING_RASTER, OPERATIONS

# The map tool scores rasters up to MAPTOOL_FULL_PIXELS whole at full resolution in one job (~0.2 s). Larger ones get
# a coarse heatmap of at most MAPTOOL_COARSE_PIXELS first (read from the overviews: well under a second for a whole
# tile; scripts/bench_analysis.py measures it), then the visible extent at up to the canvas's pixels (at least
# MAPTOOL_FULL_PIXELS; full resolution once zoomed in), again after each zoom or pan.
MAPTOOL_FULL_PIXELS = 2**20
MAPTOOL_COARSE_PIXELS = 2**18

_SIMILARITY = OPERATIONS["similarity_search"]
# the top places are the pixel similarity search's, with the same options
_TOP_PLACES = tuple(_SIMILARITY.param(name) for name in ("top_k", "min_distance_px", "exclude_radius_px",
                                                           "hits_path"))

FEWSHOT_OPERATIONS = (
    Operation(
        "fewshot_search", "Few-shot search",
        "Finds places like your positive examples and unlike your negative ones. Each pixel's score is its cosine "
        "similarity to the mean of the positive examples minus its cosine similarity to the mean of the negative "
        "ones (-2..2; 0 = as close to both; without negatives, the plain similarity to the positives). This "
        "mean-difference query works from a single click, has nothing to tune and changes smoothly with each "
        "click, where a classifier fitted to a handful of clicks in 64 dimensions would follow its regularisation "
        "more than the ground.\n\nOutputs: the score raster (bright = like the positives) and the top-k places. "
        "Extent: score only that box; maximum pixels: score a decimated grid (read from the raster's overviews), "
        "a quick first look at a whole tile.",
        "analysis.fewshot:fewshot_search",
        (
            EMBEDDING_RASTER,
            Param("out_path", "raster_out", positional=True, flag="output", key="OUTPUT", label="Score",
                  help="score raster (float32)"),
            Param("positives", "points", None, repeat=True, flag="--positive", key="POSITIVE",
                  label="Positive example", help="positive example point X Y (repeatable; at least one)"),
            Param("negatives", "points", None, optional=True, repeat=True, flag="--negative", key="NEGATIVE",
                  label="Negative example", help="negative example point X Y (repeatable)"),
            Param("points_crs", "crs", None, optional=True, toolbox=False,
                  help="CRS of the example points (default: the raster's; EPSG:4326 = lon/lat)"),
            *_TOP_PLACES,
            Param("max_pixels", "int", None, optional=True, minimum=1, advanced=True, label="Maximum pixels",
                  help="score at most this many pixels: every f-th pixel, read from the raster's overviews "
                       "(default: all pixels at full resolution)"),
            Param("extent", "extent", None, optional=True, label="Extent (empty: the whole raster)",
                  help="score only this box: XMIN YMIN XMAX YMAX (in --extent-crs, default the raster's CRS)"),
            Param("extent_crs", "crs", None, optional=True, toolbox=False, help="CRS of --extent"),
        ), toolbox=False, summary="score pixels by positive against negative examples (mean-difference query)"),
)
