"""Embedding pipelines: rasters -> continuous embedding rasters, vector features -> embedding attributes."""
from .raster import embed_raster
from .features import LayerResult, embed_locations, embed_photos, embed_features

__all__ = ["embed_raster", "embed_features", "embed_photos", "embed_locations", "LayerResult"]
