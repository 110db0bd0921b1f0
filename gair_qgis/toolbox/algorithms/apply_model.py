"""Apply model: a saved classifier or regressor -> class (+ confidence) or prediction raster."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ...layers import raster_tag
from ...styling import class_raster_renderer
from ..base import GAIRAlgorithm, require_embedding_raster
from ..outputs import finish_output
from .train_classifier import style_confidence
from .train_regressor import style_prediction


class Algorithm(GAIRAlgorithm):
    OPERATION, GROUP = "apply_model", "analysis"

    def initAlgorithm(self, config=None):  # noqa: N802
        op = self.operation
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr(op.param("raster_path").label)))
        self.addParameter(QgsProcessingParameterFile("CLASSIFIER", self.tr(op.param("model_path").label),
                                                     extension="skops"))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr(op.param("out_path").label)))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "CONFIDENCE", self.tr(op.param("confidence_path").label), optional=True, createByDefault=False))

    def validate(self, parameters, context):
        # that the model was trained on this raster's model and dimensions is checked by the engine (one line)
        return require_embedding_raster(self.parameterAsRasterLayer(parameters, "INPUT", context))

    def run_engine(self, parameters, context, feedback, bridge):
        confidence = self.parameterAsOutputLayer(parameters, "CONFIDENCE", context) or None
        result = self.run_job({"raster_path": self.raster_path(parameters, "INPUT", context),
                               "model_path": self.parameterAsFile(parameters, "CLASSIFIER", context),
                               "out_path": self.parameterAsOutputLayer(parameters, "OUTPUT", context),
                               "confidence_path": confidence}, feedback)
        out = self.track_output(str(result["path"]))
        regression = raster_tag(out, "GAIR_KIND") == "prediction"
        finish_output(context, out, self.output_name("prediction" if regression else "classes"), "OUTPUT",
                      style_prediction if regression else class_raster_renderer)
        conf = None
        if result.get("confidence_path"):
            conf = self.track_output(str(result["confidence_path"]))
            finish_output(context, conf, self.output_name("confidence"), "CONFIDENCE", style_confidence)
        feedback.pushInfo(self.tr(f"Pixels: {result['counts']}"))
        return {"OUTPUT": out, "CONFIDENCE": conf}
