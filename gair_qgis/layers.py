"""Project helpers: the "GAIR" layer group results land in, and recognising embedding rasters."""
from __future__ import annotations

from qgis.core import QgsLayerTreeGroup, QgsMapLayer, QgsProject, QgsRasterLayer

GROUP_NAME = "GAIR"


def gair_group(project: QgsProject | None = None) -> QgsLayerTreeGroup:
    """The top-level "GAIR" group, created at the top of the layer tree when missing."""
    root = (project or QgsProject.instance()).layerTreeRoot()
    group = root.findGroup(GROUP_NAME)
    if group is None:
        group = root.insertGroup(0, GROUP_NAME)
    return group


def add_to_gair_group(layer: QgsMapLayer, project: QgsProject | None = None, position: int = 0) -> QgsMapLayer:
    project = project or QgsProject.instance()
    project.addMapLayer(layer, False)
    gair_group(project).insertLayer(position, layer)
    return layer


def raster_tag(path: str, key: str) -> str | None:
    from osgeo import gdal

    dataset = gdal.Open(path)
    if dataset is None:
        return None
    try:
        return dataset.GetMetadataItem(key)
    finally:
        dataset = None


EMBEDDING_KIND = "embedding"
KIND_NAMES = {"classes": "class", "confidence": "confidence", "similarity": "similarity", "mask": "mask",
              "prediction": "prediction"}


def raster_kind(layer: QgsMapLayer | None) -> str | None:
    """The GAIR_KIND tag of a GDAL raster layer ("embedding", "classes", "similarity"...), None when absent."""
    if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
        return None
    return raster_tag(layer.source().split("|")[0], "GAIR_KIND") or None


def is_embedding_raster(layer: QgsMapLayer | None) -> bool:
    """True only for embedding rasters (tag GAIR_KIND=embedding, written by Embed raster); derived rasters
    (classes, similarity...) carry their own kind and are never taken for embeddings."""
    return raster_kind(layer) == EMBEDDING_KIND


def embedding_raster_problem(layer: QgsMapLayer | None) -> str | None:
    """None when `layer` is an embedding raster, else one sentence saying what it is and what to pick instead."""
    if layer is None:
        return "Choose an embedding raster (the raster written by Embed raster)."
    kind = raster_kind(layer)
    if kind == EMBEDDING_KIND:
        return None
    if kind:
        return (f"'{layer.name()}' is a GAIR {KIND_NAMES.get(kind, kind)} raster, not an embedding raster; "
                "pick the raster written by Embed raster.")
    return f"'{layer.name()}' is not a GAIR embedding raster; create one with Embed raster first."
