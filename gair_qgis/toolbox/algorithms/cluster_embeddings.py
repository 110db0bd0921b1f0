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
        from ...engine_link import engine_attrs

        cluster_embeddings = engine_attrs("analysis", "cluster_embeddings")
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        polygons = self.parameterAsOutputLayer(parameters, "POLYGONS", context) or None
        result = cluster_embeddings(
            raster_layer_path(layer), self.parameterAsOutputLayer(parameters, "OUTPUT", context),
            polygons_path=polygons, **self.engine_values(parameters, context), **bridge.kwargs(),
        )
        out = self.track_output(str(result.path))
        if result.polygons_path:
            self.track_output(str(result.polygons_path))
        if result.silhouettes:
            scores = ", ".join(f"k={k}: {s:.3f}" for k, s in sorted(result.silhouettes.items()))
            feedback.pushInfo(self.tr(f"Silhouette by k: {scores}; chose k={result.k}"))
        feedback.pushInfo(self.tr(f"Pixels per cluster: {result.counts}"))
        finish_output(context, out, self.output_name(f"clusters (k={result.k})"), "OUTPUT", class_raster_renderer)
        if result.polygons_path:
            finish_output(context, str(result.polygons_path), self.output_name(f"cluster polygons (k={result.k})"),
                          "POLYGONS", class_polygon_renderer)
        return {"OUTPUT": out, "POLYGONS": str(result.polygons_path) if result.polygons_path else None,
                "K": result.k}
