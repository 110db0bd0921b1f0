"""Apply model: a saved classifier or regressor -> class (+ confidence) or prediction raster."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ...styling import class_raster_renderer
from ..base import GAIRAlgorithm, raster_layer_path, require_embedding_raster
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
        from ...engine_link import engine_attrs

        check_model_matches, load_model_file = engine_attrs("analysis.sampling", "check_model_matches",
                                                            "load_model_file")
        EmbeddingRaster = engine_attrs("io.embedding_raster", "EmbeddingRaster")  # noqa: N806

        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        problem = require_embedding_raster(layer)
        if problem:
            return problem
        path = self.parameterAsFile(parameters, "CLASSIFIER", context)
        bundle = load_model_file(path)
        with EmbeddingRaster(raster_layer_path(layer)) as raster:
            check_model_matches(bundle, raster, path)
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        from ...engine_link import engine_attrs

        apply_model = engine_attrs("analysis", "apply_model")
        load_model_file = engine_attrs("analysis.sampling", "load_model_file")

        classifier = self.parameterAsFile(parameters, "CLASSIFIER", context)
        regression = load_model_file(classifier).get("task") == "regression"
        confidence = self.parameterAsOutputLayer(parameters, "CONFIDENCE", context) or None
        result = apply_model(
            self.raster_path(parameters, "INPUT", context), self.parameterAsFile(parameters, "CLASSIFIER", context),
            self.parameterAsOutputLayer(parameters, "OUTPUT", context), confidence_path=confidence,
            **bridge.kwargs(),
        )
        out = self.track_output(str(result.path))
        finish_output(context, out, self.output_name("prediction" if regression else "classes"), "OUTPUT",
                      style_prediction if regression else class_raster_renderer)
        conf = None
        if result.confidence_path:
            conf = self.track_output(str(result.confidence_path))
            finish_output(context, conf, self.output_name("confidence"), "CONFIDENCE", style_confidence)
        feedback.pushInfo(self.tr(f"Pixels: {result.counts}"))
        return {"OUTPUT": out, "CONFIDENCE": conf}
