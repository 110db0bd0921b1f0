"""Embed locations: the GAIR location embedding (lon/lat encoder) of each feature, as attribute fields."""
from __future__ import annotations

from qgis.core import QgsProcessing, QgsProcessingParameterFeatureSource, QgsProcessingParameterVectorDestination

from ..base import GAIRAlgorithm


class Algorithm(GAIRAlgorithm):
    NAME, DISPLAY, GROUP = "embed_locations", "Embed locations", "embeddings"
    HELP = (
        "Adds the GAIR location embedding of every feature (from its longitude/latitude; the centroid for "
        "lines and polygons) as fields gair_000, gair_001, ... and gair_status. No imagery needed: the location "
        "encoder was aligned with Sentinel-2 and street-view embeddings during pretraining, so these vectors "
        "describe what a place is like. The layer may be in any CRS."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFeatureSource("INPUT", self.tr("Points"),
                                                              [QgsProcessing.TypeVectorAnyGeometry]))
        self.add_model_parameter()
        self.add_embedded_count_output()
        self.addParameter(QgsProcessingParameterVectorDestination("OUTPUT", self.tr("Locations with embeddings")))

    def run_engine(self, parameters, context, feedback, bridge):
        from ...engine_link import engine

        result = engine.embed_locations(
            self.vector_path(parameters, "INPUT", context, feedback),
            self.parameterAsOutputLayer(parameters, "OUTPUT", context), self.load_model(parameters, context, feedback),
            **bridge.kwargs(),
        )
        return self.finish_layer_result(result, context, feedback)
