"""Embedding pipelines: rasters -> continuous embedding rasters, vector features -> embedding attributes."""
from .raster import embed_raster

__all__ = ["embed_raster"]
