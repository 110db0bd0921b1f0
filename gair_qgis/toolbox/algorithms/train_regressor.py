"""Train regressor: embedding raster + layer with a numeric field -> model file, k-fold report, prediction raster."""
from __future__ import annotations

from qgis.core import QgsProcessingOutputNumber, QgsProcessingParameterField, QgsProcessingParameterRasterDestination

from ...styling import band_range, sequential_renderer
from ..outputs import finish_output
from .training import TrainingAlgorithm

REGRESSORS = ("random_forest", "ridge")


def style_prediction(layer) -> None:
    sequential_renderer(layer, *band_range(layer))


class Algorithm(TrainingAlgorithm):
    NAME, DISPLAY, GROUP = "train_regressor", "Train regressor", "analysis"
    METHODS = REGRESSORS
    FIELD_LABEL = "Value field (numeric)"
    FIELD_TYPE = QgsProcessingParameterField.Numeric
    HELP = (
        "Learns a numeric quantity (tree cover %, building height, income...) from labelled points or polygons "
        "and maps it over the embedding raster. k-fold cross-validation grouped by feature reports R² and RMSE "
        "(log and saved report); the model trained on all samples is saved and applied to every pixel.\n\n"
        "Methods: random forest, ridge regression (regularisation chosen automatically)."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_training_parameters()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr("Prediction")))
        self.addOutput(QgsProcessingOutputNumber("R2", self.tr("Cross-validated R²")))

    def check_labels(self, values, folds):
        distinct = {float(v) for v in values}
        if len(distinct) < 2:
            return self.tr("The value field has fewer than two different values; there is nothing to learn.")
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        from ...engine_link import engine_attrs
        train_regressor = engine_attrs("analysis", "train_regressor")

        kwargs = self.training_kwargs(parameters, context, feedback)
        result = train_regressor(
            kwargs.pop("raster_path"), kwargs.pop("labels_path"), self.parameterAsString(parameters, "FIELD", context),
            kwargs.pop("model_path"), **kwargs, output_path=self.parameterAsOutputLayer(parameters, "OUTPUT", context),
            **bridge.kwargs(),
        )
        self.report_training(result, feedback)
        out = self.track_output(str(result.applied.path))
        finish_output(context, out, self.output_name("prediction"), "OUTPUT", style_prediction)
        return {"OUTPUT": out, "MODEL_OUTPUT": str(result.model_path),
                "REPORT": str(result.report_paths[0]) if result.report_paths else None,
                "R2": result.report.get("r2")}
