"""Cluster embeddings: k-means on an embedding raster -> paletted class raster (+ optional polygons)."""
from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)

from ...styling import class_polygon_renderer, class_raster_renderer
from ..base import GAIRAlgorithm, raster_layer_path, require_embedding_raster
from ..outputs import finish_output


class Algorithm(GAIRAlgorithm):
    NAME, DISPLAY, GROUP = "cluster_embeddings", "Cluster embeddings", "analysis"
    HELP = (
        "Groups the pixels of an embedding raster into k clusters of similar places (k-means on a random sample "
        "of pixels, then every pixel assigned to its nearest centre). No training data needed: a quick first map "
        "of what is in the scene.\n\nNumber of clusters: k, or with 'Choose k automatically' the best k between 2 "
        "and that number by silhouette score. Polygons: the clusters as a vector layer; 'merge smaller than' "
        "removes speckle from the polygons only. Same seed, same result."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr("Embedding raster")))
        self.addParameter(QgsProcessingParameterNumber("K", self.tr("Number of clusters"),
                                                       QgsProcessingParameterNumber.Integer, 8, minValue=2,
                                                       maxValue=254))
        self.addParameter(QgsProcessingParameterBoolean("AUTO_K", self.tr("Choose k automatically (2..k)"), False))
        for name, label, default, minimum in (("SAMPLE_SIZE", "Pixels sampled for k-means", 20000, 100),
                                              ("SEED", "Random seed", 0, 0),
                                              ("SIEVE", "Polygons: merge pieces smaller than (pixels)", 0, 0)):
            param = QgsProcessingParameterNumber(name, self.tr(label), QgsProcessingParameterNumber.Integer,
                                                 default, minValue=minimum)
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr("Clusters")))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "POLYGONS", self.tr("Cluster polygons"), QgsProcessing.TypeVectorPolygon, optional=True,
            createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber("K", self.tr("Number of clusters")))

    def validate(self, parameters, context):
        return require_embedding_raster(self.parameterAsRasterLayer(parameters, "INPUT", context))

    def run_engine(self, parameters, context, feedback, bridge):
        from ...engine_link import engine_attrs
        cluster_embeddings = engine_attrs("analysis", "cluster_embeddings")

        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        k = self.parameterAsInt(parameters, "K", context)
        polygons = self.parameterAsOutputLayer(parameters, "POLYGONS", context) or None
        result = cluster_embeddings(
            raster_layer_path(layer), self.parameterAsOutputLayer(parameters, "OUTPUT", context), k=k,
            k_range=(2, k) if self.parameterAsBool(parameters, "AUTO_K", context) else None,
            sample_size=self.parameterAsInt(parameters, "SAMPLE_SIZE", context),
            seed=self.parameterAsInt(parameters, "SEED", context), polygons_path=polygons,
            sieve_pixels=self.parameterAsInt(parameters, "SIEVE", context), **bridge.kwargs(),
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
            finish_output(context, str(result.polygons_path), self.output_name(f"cluster polygons (k={result.k})"), "POLYGONS",
                          class_polygon_renderer)
        return {"OUTPUT": out, "POLYGONS": str(result.polygons_path) if result.polygons_path else None,
                "K": result.k}
