"""Embed features: the Sentinel-2 GAIR embedding at each point / over each polygon, as attribute fields."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterRasterLayer,
)

from ..base import GAIRAlgorithm, raster_layer_path, require_embedding_raster, sentinel2_band_problem


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
        raster = self.parameterAsRasterLayer(parameters, "RASTER", context)
        if raster is None:
            return self.tr("Choose the Sentinel-2 raster to read the embeddings from.")
        # band names here; CRS and grid are checked by the engine when the job starts (one error line)
        problem = sentinel2_band_problem(raster_layer_path(raster),
                                         self.engine_values(parameters, context, "bands")["bands"])
        if problem:
            return problem
        if parameters.get("SPACE"):
            return require_embedding_raster(self.parameterAsRasterLayer(parameters, "SPACE", context))
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        return self.layer_job(parameters, context, feedback, raster=self.raster_path(parameters, "RASTER", context),
                              space=self.space_path(parameters, context))
