"""Similarity search: cosine similarity of every pixel to reference point(s) or a layer, plus the top-k places.

`run_similarity` is the one call into the engine; the map tool uses it too, so a click and this algorithm give
the same numbers."""
from __future__ import annotations

import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterPoint,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)

from ...styling import band_range, similarity_renderer, top_k_renderer
from ..base import GAIRAlgorithm, raster_layer_path, require_embedding_raster
from ..outputs import finish_output
from .embed_raster import quicklook_of

AGGREGATES = ("mean", "max")


def run_similarity(embedding_path: str, points, points_crs: str | None, out_raster: str, out_points: str | None,
                   top_k: int = 10, progress=None, cancel=None, *, reference_layer: str | None = None,
                   aggregate: str = "mean", min_distance_px: int = 5, threshold: float | None = None,
                   mask_path: str | None = None) -> tuple[str, str | None]:
    """engine.analysis.similarity_search -> (similarity raster, top-k GeoPackage or None when there are no hits)."""
    from ...engine_link import engine_attrs
    similarity_search = engine_attrs("analysis", "similarity_search")

    result = similarity_search(
        embedding_path, out_raster, points=list(points) or None, points_crs=points_crs,
        reference_layer=reference_layer, aggregate=aggregate, top_k=top_k, min_distance_px=min_distance_px,
        threshold=threshold, mask_path=mask_path, hits_path=out_points if top_k > 0 else None,
        progress=progress, cancel=cancel,
    )
    return str(result.path), (str(result.hits_path) if result.hits_path else None)


def style_similarity(layer) -> None:
    vmin, vmax = band_range(layer)
    similarity_renderer(layer, vmin, vmax)


class Algorithm(GAIRAlgorithm):
    NAME, DISPLAY, GROUP = "similarity_search", "Similarity search", "analysis"
    HELP = (
        "Finds places that look like your examples. Every pixel of the embedding raster gets its cosine "
        "similarity (-1..1, higher = more alike) to the reference: a point you pick, a layer of points or "
        "polygons (a polygon stands for the mean of its pixels), or both. With several references, 'mean' "
        "compares with their average, 'max' with the closest one.\n\nOutputs: the similarity raster (bright = "
        "similar), the top-k most similar places as ranked points (peaks at least 'minimum distance' pixels "
        "apart) and optionally a mask of pixels above a threshold. Layers in any CRS are reprojected."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr("Embedding raster")))
        self.addParameter(QgsProcessingParameterPoint("POINT", self.tr("Reference point"), optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "REFERENCE_LAYER", self.tr("Reference layer (points or polygons)"),
            [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterEnum("AGGREGATE", self.tr("Several references"),
                                                     ["mean (similar to their average)",
                                                      "max (similar to any of them)"], defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber("TOP_K", self.tr("Top places to return"),
                                                       QgsProcessingParameterNumber.Integer, 10, minValue=0,
                                                       maxValue=10000))
        distance = QgsProcessingParameterNumber("MIN_DISTANCE", self.tr("Minimum distance between places (pixels)"),
                                                QgsProcessingParameterNumber.Integer, 5, minValue=1)
        distance.setFlags(distance.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(distance)
        self.addParameter(QgsProcessingParameterNumber("THRESHOLD", self.tr("Threshold for the mask (cosine)"),
                                                       QgsProcessingParameterNumber.Double, optional=True,
                                                       minValue=-1.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr("Similarity")))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "TOP_K_OUTPUT", self.tr("Top places"), QgsProcessing.TypeVectorPoint))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "MASK", self.tr("Mask (similarity >= threshold)"), optional=True, createByDefault=False))

    def validate(self, parameters, context):
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        problem = require_embedding_raster(layer)
        if problem:
            return problem
        has_point = bool(parameters.get("POINT"))
        has_layer = self.parameterAsSource(parameters, "REFERENCE_LAYER", context) is not None
        if not has_point and not has_layer:
            return self.tr("Give a reference point or a reference layer: similarity needs something to compare to.")
        if has_point:
            point = self.parameterAsPoint(parameters, "POINT", context, layer.crs())
            if not layer.extent().contains(point):
                return self.tr("The reference point is outside the embedding raster; pick a point inside it.")
        wants_mask = parameters.get("MASK") not in (None, "")
        if wants_mask and parameters.get("THRESHOLD") in (None, ""):
            return self.tr("A mask needs a threshold (cosine similarity, e.g. 0.8).")
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        points = []
        if parameters.get("POINT"):
            point = self.parameterAsPoint(parameters, "POINT", context, layer.crs())
            points.append((point.x(), point.y()))
        reference = None
        if self.parameterAsSource(parameters, "REFERENCE_LAYER", context) is not None:
            reference = self.vector_path(parameters, "REFERENCE_LAYER", context, feedback)
        threshold = self.parameterAsDouble(parameters, "THRESHOLD", context) \
            if parameters.get("THRESHOLD") not in (None, "") else None
        mask = self.parameterAsOutputLayer(parameters, "MASK", context) or None
        top_k = self.parameterAsInt(parameters, "TOP_K", context)
        out, hits = run_similarity(
            raster_layer_path(layer), points, layer.crs().toWkt(),
            self.parameterAsOutputLayer(parameters, "OUTPUT", context),
            self.parameterAsOutputLayer(parameters, "TOP_K_OUTPUT", context), top_k, bridge.progress, bridge.cancel,
            reference_layer=reference, aggregate=AGGREGATES[self.parameterAsEnum(parameters, "AGGREGATE", context)],
            min_distance_px=self.parameterAsInt(parameters, "MIN_DISTANCE", context), threshold=threshold,
            mask_path=mask,
        )
        for path in (out, hits, mask):
            if path:
                self.track_output(path)
        finish_output(context, out, self.output_name("similarity"), "OUTPUT", style_similarity,
                      hide_sources=(raster_layer_path(layer), quicklook_of(raster_layer_path(layer))))
        if hits:
            finish_output(context, hits, self.output_name("top places"), "TOP_K_OUTPUT", top_k_renderer)
        elif top_k > 0:
            feedback.pushWarning(self.tr("No similar places found (every peak is below the threshold)."))
        if mask and os.path.isfile(mask):
            finish_output(context, mask, self.output_name("similarity mask"), "MASK")
        return {"OUTPUT": out, "TOP_K_OUTPUT": hits, "MASK": mask}
