"""Operations of the searches only GAIR can do (by photo, by location) and of change between two dates."""
from __future__ import annotations

from .definitions import Operation, Param
from .operations import _MODEL_PARAMS, BLOCK_SIZE, EMBEDDING_RASTER, OPERATIONS

_SIMILARITY = OPERATIONS["similarity_search"]
# the scan, the top places and the mask are the pixel similarity search's, with the same options
SCAN_PARAMS = tuple(_SIMILARITY.param(name) for name in ("aggregate", "top_k", "min_distance_px", "threshold",
                                                         "mask_path", "hits_path")) + (BLOCK_SIZE,)
_OUT = _SIMILARITY.param("out_path")
_SAME_MODEL = ("The model must be the one that made the embedding raster (its fingerprint is checked); the query "
               "goes through the raster's PCA when it has one. ")

SEARCH_OPERATIONS = (
    Operation(
        "search_by_photo", "Search by street-view photo",
        "Finds where the embedding raster looks like a street-view photo. GAIR learned to align street-view photos "
        "with the Sentinel-2 pixels at the place they were taken, so the photo's aligned embedding compares "
        "with every pixel (cosine, -1..1): bright = ground whose imagery matches what the photo shows (e.g. a "
        "photo of a tree-lined residential street lights up such neighbourhoods). No other tool searches satellite "
        "imagery with a photo.\n\nPhotos: files, or a point layer with a field holding each photo's path "
        "(relative paths from the layer's folder); with several, 'mean' compares with their average, 'max' with "
        "the closest. " + _SAME_MODEL + "Outputs as in Similarity search: the similarity raster, the top-k places "
        "and optionally a mask above a threshold.",
        "analysis.modal_search:search_by_photo",
        (
            EMBEDDING_RASTER,
            _OUT,
            Param("photos", "file", None, optional=True, repeat=True, flag="--photo", key="PHOTO",
                  label="Street-view photo", help="street-view photo file (JPEG/PNG; repeatable)"),
            Param("photo_layer", "vector", None, optional=True, key="PHOTO_LAYER",
                  label="Point layer with photo paths (optional)",
                  help="point layer whose features name a photo in --photo-field"),
            Param("photo_field", "field", "photo", label="Photo path field",
                  help="field of --photo-layer with each photo's path (absolute, or relative to the layer's folder)"),
            Param("layer", "str", None, optional=True, toolbox=False, help="layer name inside --photo-layer"),
            *SCAN_PARAMS,
            *_MODEL_PARAMS,
        ), summary="where the raster looks like a street-view photo (GAIR's aligned photo embedding)"),
    Operation(
        "search_by_location", "Search by location",
        "Finds places whose imagery looks like what GAIR learned for a location. GAIR trained its location "
        "encoder, from longitude/latitude alone, to match the embedding of the Sentinel-2 imagery there; a "
        "location's embedding is a summary of the ground the model expects at that place (climate, land use, "
        "built form). Compared with every pixel (cosine, -1..1), it lights up the ground that matches that "
        "expectation: near the location it shows where the imagery fits what is typical there, and over another "
        "region it finds look-alikes of that place's typical ground.\n\nLocations: longitude/latitude pairs, or a "
        "point layer in any CRS (a polygon stands for its centroid); with several, 'mean' or 'max' as in "
        "Similarity search. " + _SAME_MODEL + "Outputs as in Similarity search.",
        "analysis.modal_search:search_by_location",
        (
            EMBEDDING_RASTER,
            _OUT,
            Param("locations", "points", None, optional=True, repeat=True, flag="--location", key="LOCATION",
                  label="Location", help="location X Y, longitude latitude by default (repeatable)"),
            Param("locations_crs", "crs", None, optional=True, toolbox=False, flag="--location-crs",
                  help="CRS of --location (default: EPSG:4326 longitude/latitude)"),
            Param("location_layer", "vector", None, optional=True, key="LOCATION_LAYER",
                  label="Layer of locations (optional)", help="point layer of locations (any CRS)"),
            Param("layer", "str", None, optional=True, toolbox=False, help="layer name inside --location-layer"),
            *SCAN_PARAMS,
            *_MODEL_PARAMS,
        ), summary="where the raster looks like what GAIR learned for a location"),
    Operation(
        "change", "Change between two dates",
        "Where the ground changed between two embedding rasters of the same place (two dates). Both must be in "
        "the same embedding space (same model, query mode and PCA: refused otherwise, naming what differs) and "
        "on the same pixel grid where they overlap (same CRS and pixel size, aligned pixels); the output covers "
        "the overlap.\n\nOutputs: the cosine distance of each pixel's two vectors (0 = same, up to 2), a change "
        "mask above a threshold (default: Otsu's threshold, which splits the distance histogram into 'unchanged' "
        "and 'changed' where the two groups separate best) and the largest changed areas as polygons with their "
        "mean and maximum change, ranked by total change (area x mean).",
        "analysis.change:change",
        (
            Param("before_path", "raster", positional=True, flag="before", key="BEFORE",
                  label="Embedding raster, first date", help="embedding raster of the first date"),
            Param("after_path", "raster", positional=True, flag="after", key="AFTER",
                  label="Embedding raster, second date", help="embedding raster of the second date"),
            Param("out_path", "raster_out", positional=True, flag="output", key="OUTPUT", label="Change (distance)",
                  help="cosine distance raster (float32)"),
            Param("threshold", "float", None, optional=True, minimum=0.0, maximum=2.0,
                  label="Change threshold (cosine distance; empty: Otsu)",
                  help="cosine distance above which a pixel changed (default: Otsu's threshold of the distances)"),
            Param("mask_path", "raster_out", None, optional=True, flag="--mask", key="MASK",
                  label="Change mask", help="Byte mask raster: 1 changed, 0 unchanged"),
            Param("polygons_path", "vector_out", None, optional=True, flag="--polygons", key="POLYGONS",
                  label="Changed areas", help="GeoPackage of the top changed areas with their mean change"),
            Param("top_areas", "int", 20, minimum=0, maximum=100000, label="Changed areas to keep",
                  help="number of changed areas written as polygons (largest total change first)"),
            Param("min_area_px", "int", 4, minimum=1, advanced=True, flag="--min-area", key="MIN_AREA",
                  label="Smallest changed area (pixels)", help="changed areas smaller than this are left out"),
            BLOCK_SIZE,
        ), summary="cosine change between two dates, Otsu mask and changed-area polygons"),
)
