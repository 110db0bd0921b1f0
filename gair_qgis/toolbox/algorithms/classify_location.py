"""Classify from location: labelled points -> location embeddings -> classifier -> class raster over an extent."""
from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputNumber,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterRasterDestination,
)

from ...styling import class_raster_renderer, sequential_renderer
from ..base import GAIRAlgorithm
from ..outputs import finish_output


class Algorithm(GAIRAlgorithm):
    OPERATION, GROUP = "classify_location", "analysis"

    def initAlgorithm(self, config=None):  # noqa: N802
        op = self.operation
        self.addParameter(QgsProcessingParameterFeatureSource("INPUT", self.tr(op.param("points_path").label),
                                                              [QgsProcessing.TypeVectorPoint]))
        self.addParameter(QgsProcessingParameterField("FIELD", self.tr(op.param("class_field").label),
                                                      parentLayerParameterName="INPUT"))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", self.tr(op.param("extent").label), optional=True))
        self.add_engine_parameters()
        self.add_model_parameter()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr(op.param("output_path").label)))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "CONFIDENCE", self.tr(op.param("confidence_path").label), optional=True))
        self.addOutput(QgsProcessingOutputNumber("ACCURACY", self.tr("Cross-validated overall accuracy")))

    def validate(self, parameters, context):
        source = self.parameterAsSource(parameters, "INPUT", context)
        if source is None:
            return self.tr("Choose a layer of labelled points.")
        field = self.parameterAsString(parameters, "FIELD", context)
        index = source.fields().lookupField(field)
        if index < 0:
            return self.tr(f"The points layer has no field '{field}'.")
        classes = {v for v in source.uniqueValues(index) if v not in (None, "") and not _is_null(v)}
        if len(classes) < 2:
            return self.tr(f"The class field has {len(classes)} class(es); a classifier needs at least two.")
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        extent = extent_crs = None
        if parameters.get("EXTENT"):
            crs = self.parameterAsExtentCrs(parameters, "EXTENT", context)
            box = self.parameterAsExtent(parameters, "EXTENT", context, crs)
            extent = [box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()]
            extent_crs = crs.authid() or crs.toWkt()
        confidence = self.parameterAsOutputLayer(parameters, "CONFIDENCE", context) or None
        result = self.run_job({
            "points_path": self.vector_path(parameters, "INPUT", context, feedback),
            "output_path": self.parameterAsOutputLayer(parameters, "OUTPUT", context),
            "class_field": self.parameterAsString(parameters, "FIELD", context), "extent": extent,
            "extent_crs": extent_crs, "confidence_path": confidence, **self.engine_values(parameters, context),
            **self.model_params(parameters, context, feedback)}, feedback)
        if result.get("summary"):
            feedback.pushInfo(result["summary"])
        feedback.pushInfo(self.tr(f"Pixels per class: {result['counts']}"))
        out = self.track_output(str(result["path"]))
        finish_output(context, out, self.output_name("classes from location"), "OUTPUT", class_raster_renderer)
        conf = None
        if result.get("confidence_path"):
            conf = self.track_output(str(result["confidence_path"]))
            finish_output(context, conf, self.output_name("location confidence"), "CONFIDENCE",
                          lambda layer: sequential_renderer(layer, 0.0, 1.0))
        return {"OUTPUT": out, "CONFIDENCE": conf, "ACCURACY": result["accuracy"]}


def _is_null(value) -> bool:
    try:
        return value.isNull()  # QVariant NULL
    except AttributeError:
        return False
