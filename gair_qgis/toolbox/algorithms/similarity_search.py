"""Similarity search: cosine similarity of every pixel to reference point(s) or a layer, plus the top-k places.

The engine call is gair_qgis.engine_calls.run_similarity, which the map tool uses too: a click and this algorithm
give the same numbers."""
from __future__ import annotations

import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterPoint,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)

from ...engine_calls import quicklook_of, run_similarity
from ...styling import band_range, similarity_renderer, top_k_renderer
from ..base import GAIRAlgorithm, raster_layer_path, require_embedding_raster
from ..outputs import finish_output


def style_similarity(layer) -> None:
    vmin, vmax = band_range(layer)
    similarity_renderer(layer, vmin, vmax)


class Algorithm(GAIRAlgorithm):
    OPERATION, GROUP = "similarity_search", "analysis"

    def initAlgorithm(self, config=None):  # noqa: N802
        op = self.operation
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr(op.param("raster_path").label)))
        self.addParameter(QgsProcessingParameterPoint("POINT", self.tr(op.param("points").label), optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "REFERENCE_LAYER", self.tr(op.param("reference_layer").label),
            [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon], optional=True))
        self.add_engine_parameters()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr(op.param("out_path").label)))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "TOP_K_OUTPUT", self.tr(op.param("hits_path").label), QgsProcessing.TypeVectorPoint))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "MASK", self.tr(op.param("mask_path").label), optional=True, createByDefault=False))

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
        mask = self.parameterAsOutputLayer(parameters, "MASK", context) or None
        values = self.engine_values(parameters, context)
        top_k = values.pop("top_k")
        out, hits = run_similarity(
            raster_layer_path(layer), points, layer.crs().toWkt(),
            self.parameterAsOutputLayer(parameters, "OUTPUT", context),
            self.parameterAsOutputLayer(parameters, "TOP_K_OUTPUT", context), top_k, *self.job_callbacks(feedback),
            reference_layer=reference, mask_path=mask, **values,
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
