"""Embed raster: a Sentinel-2 raster -> continuous GAIR embedding raster (+ a georeferenced quicklook)."""
from __future__ import annotations

import os

from qgis.core import (
    QgsProcessingOutputRasterLayer,
    QgsProcessingParameterExtent,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ...engine_calls import quicklook_of
from ..base import GAIRAlgorithm, raster_layer_path
from ..outputs import finish_output


class Algorithm(GAIRAlgorithm):
    OPERATION, GROUP = "embed_raster", "embeddings"

    def initAlgorithm(self, config=None):  # noqa: N802
        op = self.operation
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr(op.param("input_path").label)))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", self.tr(op.param("extent").label), optional=True))
        self.add_engine_parameters()
        self.add_model_parameter()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr(op.param("output_path").label)))
        self.addOutput(QgsProcessingOutputRasterLayer("QUICKLOOK", self.tr("Quicklook")))

    def validate(self, parameters, context):
        # the raster's CRS, grid and bands are checked by the engine when the job starts (one error line)
        if parameters.get("EXTENT"):
            layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
            extent = self.parameterAsExtent(parameters, "EXTENT", context, layer.crs())
            if not extent.intersects(layer.extent()):
                return self.tr("The extent does not overlap the raster; choose an extent inside it.")
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        extent = None
        if parameters.get("EXTENT"):
            box = self.parameterAsExtent(parameters, "EXTENT", context, layer.crs())
            extent = (box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum())
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        params = {"input_path": raster_layer_path(layer), "output_path": output, "extent": extent,
                  **self.engine_values(parameters, context), **self.model_params(parameters, context, feedback)}
        feedback.pushInfo(self.tr(f"Embedding {layer.name()} into {output}"))
        # the engine's log reaches the Processing log: the output size estimate, then "crop i/n, ~m:ss left"
        out = self.run_job(params, feedback, bridge=bridge)
        self.track_output(out)
        finish_output(context, out, self.output_name("embedding"), "OUTPUT",
                      true_colour_sources=[raster_layer_path(layer)])
        results = {"OUTPUT": out, "QUICKLOOK": None}
        look = quicklook_of(out)
        if os.path.isfile(look):
            finish_output(context, look, self.output_name("embedding quicklook"), "QUICKLOOK",
                          load=context.willLoadLayerOnCompletion(out), visible=False)
            results["QUICKLOOK"] = look
        return results
