"""Train classifier: embedding raster + labelled layer -> model file, k-fold report, class + confidence rasters."""
from __future__ import annotations

from qgis.core import QgsProcessingOutputNumber, QgsProcessingParameterRasterDestination

from ...styling import class_raster_renderer, sequential_renderer
from ..outputs import finish_output
from .training import TrainingAlgorithm


def style_confidence(layer) -> None:
    sequential_renderer(layer, 0.0, 1.0)


class Algorithm(TrainingAlgorithm):
    OPERATION, GROUP = "train_classifier", "analysis"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_training_parameters()
        op = self.operation
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr(op.param("output_path").label)))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "CONFIDENCE", self.tr(op.param("confidence_path").label), optional=True))
        self.addOutput(QgsProcessingOutputNumber("ACCURACY", self.tr("Cross-validated overall accuracy")))

    def check_labels(self, values, folds):
        if len(values) < 2:
            return self.tr(f"The class field has {len(values)} class(es); a classifier needs at least two.")
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        confidence = self.parameterAsOutputLayer(parameters, "CONFIDENCE", context) or None
        result = self.run_job({**self.training_kwargs(parameters, context, feedback),
                               "output_path": self.parameterAsOutputLayer(parameters, "OUTPUT", context),
                               "confidence_path": confidence}, feedback)
        self.report_training(result, feedback)
        applied = result["applied"]
        out = self.track_output(str(applied["path"]))
        finish_output(context, out, self.output_name("classes"), "OUTPUT", class_raster_renderer)
        conf = None
        if applied.get("confidence_path"):
            conf = self.track_output(str(applied["confidence_path"]))
            finish_output(context, conf, self.output_name("confidence"), "CONFIDENCE", style_confidence)
        feedback.pushInfo(self.tr(f"Pixels per class: {applied['counts']}"))
        return {"OUTPUT": out, "CONFIDENCE": conf, "MODEL_OUTPUT": str(result["model_path"]),
                "REPORT": self.first_report(result), "ACCURACY": result["report"].get("overall_accuracy")}
