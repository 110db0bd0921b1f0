"""Embed locations: the GAIR location embedding (lon/lat encoder) of each feature, as attribute fields."""
from __future__ import annotations

from qgis.core import QgsProcessing, QgsProcessingParameterFeatureSource, QgsProcessingParameterVectorDestination

from ..base import GAIRAlgorithm


class Algorithm(GAIRAlgorithm):
    OPERATION, GROUP = "embed_locations", "embeddings"

    def initAlgorithm(self, config=None):  # noqa: N802
        op = self.operation
        self.addParameter(QgsProcessingParameterFeatureSource("INPUT", self.tr(op.param("layer").label),
                                                              [QgsProcessing.TypeVectorAnyGeometry]))
        self.add_engine_parameters()
        self.add_model_parameter()
        self.add_embedded_count_output()
        self.addParameter(QgsProcessingParameterVectorDestination("OUTPUT", self.tr(op.param("output").label)))

    def run_engine(self, parameters, context, feedback, bridge):
        from ...engine_link import engine

        result = engine.embed_locations(
            self.vector_path(parameters, "INPUT", context, feedback),
            self.parameterAsOutputLayer(parameters, "OUTPUT", context), self.load_model(parameters, context, feedback),
            **self.engine_values(parameters, context), **bridge.kwargs(),
        )
        return self.finish_layer_result(result, context, feedback)
