"""Embedding pipelines: rasters -> continuous embedding rasters, vector features -> embedding attributes."""
from .raster import embed_raster
from .vectors import LayerResult, embed_locations, embed_photos, embed_points

__all__ = ["embed_raster", "embed_points", "embed_photos", "embed_locations", "LayerResult"]
