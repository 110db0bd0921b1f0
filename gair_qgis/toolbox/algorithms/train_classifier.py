"""Train classifier: embedding raster + labelled layer -> model file, k-fold report, class + confidence rasters."""
from __future__ import annotations

from qgis.core import QgsProcessingOutputNumber, QgsProcessingParameterRasterDestination

from ...styling import class_raster_renderer, sequential_renderer
from ..outputs import finish_output
from .training import TrainingAlgorithm

CLASSIFIERS = ("logistic", "random_forest", "knn", "gradient_boosting")


def style_confidence(layer) -> None:
    sequential_renderer(layer, 0.0, 1.0)


class Algorithm(TrainingAlgorithm):
    NAME, DISPLAY, GROUP = "train_classifier", "Train classifier", "analysis"
    METHODS = CLASSIFIERS
    FIELD_LABEL = "Class field"
    HELP = (
        "Learns land cover (or any classes) from a few labelled points or polygons. The pixels under each point "
        "and inside each polygon are the training samples; the class comes from the chosen field.\n\n"
        "Accuracy is measured first by k-fold cross-validation grouped by feature (a polygon's pixels are never "
        "on both sides), and the report (accuracy, per-class precision/recall, confusion matrix) is shown in "
        "the log and saved. Then the model is trained on all samples, saved (for Apply classifier) and applied: "
        "a class raster named by your classes and a confidence raster (probability of the chosen class).\n\n"
        "Each class needs at least as many labelled features as folds. Methods: logistic regression (fast, "
        "strong on embeddings), random forest, k-nearest neighbours (cosine), gradient boosting."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_training_parameters()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr("Classes")))
        self.addParameter(QgsProcessingParameterRasterDestination("CONFIDENCE", self.tr("Confidence"),
                                                                  optional=True))
        self.addOutput(QgsProcessingOutputNumber("ACCURACY", self.tr("Cross-validated overall accuracy")))

    def check_labels(self, values, folds):
        if len(values) < 2:
            return self.tr(f"The class field has {len(values)} class(es); a classifier needs at least two.")
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        from ...engine_link import engine_attrs
        train_classifier = engine_attrs("analysis", "train_classifier")

        kwargs = self.training_kwargs(parameters, context, feedback)
        confidence = self.parameterAsOutputLayer(parameters, "CONFIDENCE", context) or None
        result = train_classifier(
            kwargs.pop("raster_path"), kwargs.pop("labels_path"), self.parameterAsString(parameters, "FIELD", context),
            kwargs.pop("model_path"), **kwargs, output_path=self.parameterAsOutputLayer(parameters, "OUTPUT", context),
            confidence_path=confidence, **bridge.kwargs(),
        )
        self.report_training(result, feedback)
        applied = result.applied
        out = self.track_output(str(applied.path))
        finish_output(context, out, self.output_name("classes"), "OUTPUT", class_raster_renderer)
        conf = None
        if applied.confidence_path:
            conf = self.track_output(str(applied.confidence_path))
            finish_output(context, conf, self.output_name("confidence"), "CONFIDENCE", style_confidence)
        feedback.pushInfo(self.tr(f"Pixels per class: {applied.counts}"))
        return {"OUTPUT": out, "CONFIDENCE": conf, "MODEL_OUTPUT": str(result.model_path),
                "REPORT": str(result.report_paths[0]) if result.report_paths else None,
                "ACCURACY": result.report.get("overall_accuracy")}
