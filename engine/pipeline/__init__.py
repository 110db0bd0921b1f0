"""Embedding pipelines: rasters -> continuous embedding rasters, vector features -> embedding attributes."""
from .features import LayerResult, embed_features, embed_locations, embed_photos
from .mosaic import MosaicResult, embed_rasters
from .raster import embed_raster

__all__ = ["embed_raster", "embed_rasters", "MosaicResult", "embed_features", "embed_photos", "embed_locations",
           "LayerResult"]
