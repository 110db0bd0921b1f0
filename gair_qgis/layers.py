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


def is_embedding_raster(layer: QgsMapLayer | None) -> bool:
    """True for rasters written by GAIR (they carry the GAIR_SPACE tag)."""
    if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
        return False
    return bool(raster_tag(layer.source().split("|")[0], "GAIR_SPACE"))
