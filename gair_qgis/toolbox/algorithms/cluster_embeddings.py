"""Cluster embeddings: k-means on an embedding raster -> paletted class raster (+ optional polygons)."""
from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)

from ...styling import class_polygon_renderer, class_raster_renderer
from ..base import GAIRAlgorithm, raster_layer_path, require_embedding_raster
from ..outputs import finish_output


class Algorithm(GAIRAlgorithm):
    OPERATION, GROUP = "cluster_embeddings", "analysis"

    def initAlgorithm(self, config=None):  # noqa: N802
        op = self.operation
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr(op.param("raster_path").label)))
        self.add_engine_parameters()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr(op.param("out_path").label)))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "POLYGONS", self.tr(op.param("polygons_path").label), QgsProcessing.TypeVectorPolygon, optional=True,
            createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber("K", self.tr("Number of clusters")))

    def validate(self, parameters, context):
        return require_embedding_raster(self.parameterAsRasterLayer(parameters, "INPUT", context))

    def run_engine(self, parameters, context, feedback, bridge):
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        polygons = self.parameterAsOutputLayer(parameters, "POLYGONS", context) or None
        result = self.run_job({"raster_path": raster_layer_path(layer),
                               "out_path": self.parameterAsOutputLayer(parameters, "OUTPUT", context),
                               "polygons_path": polygons, **self.engine_values(parameters, context)}, feedback)
        out = self.track_output(str(result["path"]))
        polygons = str(result["polygons_path"]) if result.get("polygons_path") else None
        if polygons:
            self.track_output(polygons)
        k = result["k"]
        if result.get("silhouettes"):
            scores = ", ".join(f"k={key}: {score:.3f}"
                               for key, score in sorted(result["silhouettes"].items(), key=lambda kv: int(kv[0])))
            feedback.pushInfo(self.tr(f"Silhouette by k: {scores}; chose k={k}"))
        feedback.pushInfo(self.tr(f"Pixels per cluster: {result['counts']}"))
        finish_output(context, out, self.output_name(f"clusters (k={k})"), "OUTPUT", class_raster_renderer)
        if polygons:
            finish_output(context, polygons, self.output_name(f"cluster polygons (k={k})"), "POLYGONS",
                          class_polygon_renderer)
        return {"OUTPUT": out, "POLYGONS": polygons, "K": k}
