"""Shared parameters and checks of Train classifier and Train regressor (labelled layer + field + method)."""
from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterLayer,
)

from ..base import GAIRAlgorithm, require_embedding_raster
from ..report_log import report_for_log

REPORT_FILTER = "HTML report (*.html);;JSON (*.json);;Text (*.txt)"
MODEL_FILTER = "GAIR analysis model (*.skops)"


class TrainingAlgorithm(GAIRAlgorithm):
    FIELD = "class_field"  # the engine keyword of the label field
    FIELD_TYPE = QgsProcessingParameterField.Any

    def add_training_parameters(self) -> None:
        op = self.operation
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr(op.param("raster_path").label)))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "LABELS", self.tr(op.param("labels_path").label),
            [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField("FIELD", self.tr(op.param(self.FIELD).label),
                                                      parentLayerParameterName="LABELS", type=self.FIELD_TYPE))
        self.add_engine_parameters()
        self.addParameter(QgsProcessingParameterFileDestination("MODEL_OUTPUT", self.tr(op.param("model_path").label),
                                                                MODEL_FILTER))
        self.addParameter(QgsProcessingParameterFileDestination("REPORT", self.tr(op.param("report_paths").label),
                                                                REPORT_FILTER, optional=True))

    def validate(self, parameters, context):
        problem = require_embedding_raster(self.parameterAsRasterLayer(parameters, "INPUT", context))
        if problem:
            return problem
        source = self.parameterAsSource(parameters, "LABELS", context)
        if source is None:
            return self.tr("Choose a labelled layer.")
        field = self.parameterAsString(parameters, "FIELD", context)
        index = source.fields().lookupField(field)
        if index < 0:
            return self.tr(f"The labelled layer has no field '{field}'.")
        values = {v for v in source.uniqueValues(index) if v not in (None, "") and not _is_null(v)}
        return self.check_labels(values, self.parameterAsInt(parameters, "FOLDS", context))

    def check_labels(self, values: set, folds: int) -> str | None:
        return None

    def training_kwargs(self, parameters, context, feedback) -> dict:
        """Every engine keyword of the training function but the outputs the subclass adds."""
        report = self.parameterAsFileOutput(parameters, "REPORT", context)
        return dict(
            raster_path=self.raster_path(parameters, "INPUT", context),
            labels_path=self.vector_path(parameters, "LABELS", context, feedback),
            model_path=self.parameterAsFileOutput(parameters, "MODEL_OUTPUT", context),
            report_paths=[report] if report else [],
            **{self.FIELD: self.parameterAsString(parameters, "FIELD", context)},
            **self.engine_values(parameters, context),
        )

    def report_training(self, result: dict, feedback) -> None:
        self.track_output(str(result["model_path"]))
        for path in result.get("report_paths") or []:
            self.track_output(str(path))
        feedback.pushInfo(self.tr(f"Trained on {result['samples']} pixels from {result['features']} features "
                                  f"({result['skipped_outside']} outside the raster, {result['skipped_nodata']} on "
                                  f"nodata, {result['skipped_unlabelled']} without a label)."))
        feedback.pushInfo(report_for_log(result["report"]))  # laid out to line up in the dialog's log

    @staticmethod
    def first_report(result: dict) -> str | None:
        return str(result["report_paths"][0]) if result.get("report_paths") else None


def _is_null(value) -> bool:
    try:
        return value.isNull()  # QVariant NULL
    except AttributeError:
        return False
