"""Search by location: where the embedding raster looks like what GAIR learned for a place (location encoder)."""
from __future__ import annotations

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessing,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterPoint,
)

from .query_search import QuerySearchAlgorithm

LONLAT = "EPSG:4326"


class Algorithm(QuerySearchAlgorithm):
    OPERATION, WHAT = "search_by_location", "location"

    def initAlgorithm(self, config=None):  # noqa: N802
        op = self.operation
        self.add_raster_input()
        self.addParameter(QgsProcessingParameterPoint("LOCATION", self.tr(op.param("locations").label),
                                                      optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "LOCATION_LAYER", self.tr(op.param("location_layer").label), [QgsProcessing.TypeVectorAnyGeometry],
            optional=True))
        self.add_search_outputs()

    def validate(self, parameters, context):
        problem = self.check_raster_and_mask(parameters, context)
        if problem:
            return problem
        if not parameters.get("LOCATION") and self.parameterAsSource(parameters, "LOCATION_LAYER", context) is None:
            return self.tr("Give a location (a point) or a layer of locations.")
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        query = {"locations": None, "locations_crs": LONLAT, "location_layer": None}
        if parameters.get("LOCATION"):
            point = self.parameterAsPoint(parameters, "LOCATION", context, QgsCoordinateReferenceSystem(LONLAT))
            query["locations"] = [[point.x(), point.y()]]
        if self.parameterAsSource(parameters, "LOCATION_LAYER", context) is not None:
            query["location_layer"] = self.vector_path(parameters, "LOCATION_LAYER", context, feedback)
        return self.run_search(query, parameters, context, feedback, bridge)
