"""The `gair` Processing provider: every engine operation as a toolbox algorithm."""
from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .. import resources_path


class GAIRProvider(QgsProcessingProvider):
    """Provider id `gair`; algorithms are grouped Embeddings / Analysis / Model."""

    def id(self) -> str:
        return "gair"

    def name(self) -> str:
        return "GAIR"

    def longName(self) -> str:  # noqa: N802
        return "GAIR geospatial embeddings"

    def icon(self) -> QIcon:
        return QIcon(resources_path("icon.png"))

    # the engine writes GeoTIFF rasters and GeoPackage layers; offer only those as destinations
    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["tif"]

    def supportedOutputVectorLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["gpkg"]

    def defaultRasterFileExtension(self) -> str:  # noqa: N802
        return "tif"

    def defaultVectorFileExtension(self, hasGeometry: bool = True) -> str:  # noqa: N802, N803
        return "gpkg"

    def loadAlgorithms(self) -> None:  # noqa: N802
        from .algorithms import algorithm_classes

        for cls in algorithm_classes():
            self.addAlgorithm(cls())
