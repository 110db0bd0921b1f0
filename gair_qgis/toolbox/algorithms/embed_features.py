"""Embed features: the Sentinel-2 GAIR embedding at each point / over each polygon, as attribute fields."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterRasterLayer,
)

from ..base import GAIRAlgorithm, raster_layer_path, require_embedding_raster


class Algorithm(GAIRAlgorithm):
    OPERATION, GROUP = "embed_features", "embeddings"

    def initAlgorithm(self, config=None):  # noqa: N802
        op = self.operation
        self.add_layer_input()
        self.addParameter(QgsProcessingParameterRasterLayer("RASTER", self.tr(op.param("raster").label)))
        self.add_engine_parameters()
        self.add_space_parameter()
        self.add_model_parameter()
        self.add_layer_output()

    def validate(self, parameters, context):
        from ...engine_link import engine, engine_attrs

        SourceRaster = engine_attrs("pipeline.source", "SourceRaster")  # noqa: N806
        raster = self.parameterAsRasterLayer(parameters, "RASTER", context)
        bands = self.engine_values(parameters, context, "bands")["bands"]
        with SourceRaster(raster_layer_path(raster), engine.GAIRConfig(), bands):
            pass  # CRS, north-up grid and Sentinel-2 bands, with errors that say how to fix them
        if parameters.get("SPACE"):
            return require_embedding_raster(self.parameterAsRasterLayer(parameters, "SPACE", context))
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        from ...engine_link import engine

        result = engine.embed_features(
            self.raster_path(parameters, "RASTER", context), self.vector_path(parameters, "INPUT", context, feedback),
            self.parameterAsOutputLayer(parameters, "OUTPUT", context), self.load_model(parameters, context, feedback),
            space=self.space_path(parameters, context), **self.engine_values(parameters, context), **bridge.kwargs(),
        )
        return self.finish_layer_result(result, context, feedback)
