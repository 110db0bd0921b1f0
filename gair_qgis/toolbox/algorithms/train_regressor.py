"""Train regressor: embedding raster + layer with a numeric field -> model file, k-fold report, prediction raster."""
from __future__ import annotations

from qgis.core import QgsProcessingOutputNumber, QgsProcessingParameterField, QgsProcessingParameterRasterDestination

from ...styling import band_range, sequential_renderer
from ..outputs import finish_output
from .training import TrainingAlgorithm


def style_prediction(layer) -> None:
    sequential_renderer(layer, *band_range(layer))


class Algorithm(TrainingAlgorithm):
    OPERATION, GROUP = "train_regressor", "analysis"
    FIELD = "value_field"
    FIELD_TYPE = QgsProcessingParameterField.Numeric

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_training_parameters()
        self.addParameter(QgsProcessingParameterRasterDestination(
            "OUTPUT", self.tr(self.operation.param("output_path").label)))
        self.addOutput(QgsProcessingOutputNumber("R2", self.tr("Cross-validated R²")))

    def check_labels(self, values, folds):
        distinct = {float(v) for v in values}
        if len(distinct) < 2:
            return self.tr("The value field has fewer than two different values; there is nothing to learn.")
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        result = self.run_job({**self.training_kwargs(parameters, context, feedback),
                               "output_path": self.parameterAsOutputLayer(parameters, "OUTPUT", context)}, feedback)
        self.report_training(result, feedback)
        out = self.track_output(str(result["applied"]["path"]))
        finish_output(context, out, self.output_name("prediction"), "OUTPUT", style_prediction)
        return {"OUTPUT": out, "MODEL_OUTPUT": str(result["model_path"]), "REPORT": self.first_report(result),
                "R2": result["report"].get("r2")}
