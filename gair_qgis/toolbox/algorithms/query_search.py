"""Shared parts of Search by photo and Search by location: a query the model embeds (a photo, a location) scanned
against an embedding raster as Similarity search scans a reference pixel, with the same outputs and styling."""
from __future__ import annotations

import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)

from ...engine_calls import quicklook_of
from ...styling import top_k_renderer
from ..base import GAIRAlgorithm, raster_layer_path, require_embedding_raster
from ..outputs import finish_output
from .similarity_search import style_similarity


class QuerySearchAlgorithm(GAIRAlgorithm):
    GROUP = "analysis"
    WHAT = "query"  # names the result layers ("photo similarity")

    def add_raster_input(self) -> None:
        label = self.operation.param("raster_path").label
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr(label)))

    def add_search_outputs(self) -> None:
        """Scalars (aggregate, top-k, distance, threshold), the model, then the similarity raster, top places, mask."""
        op = self.operation
        self.add_engine_parameters()
        self.add_model_parameter()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr(op.param("out_path").label)))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "TOP_K_OUTPUT", self.tr(op.param("hits_path").label), QgsProcessing.TypeVectorPoint, optional=True))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "MASK", self.tr(op.param("mask_path").label), optional=True, createByDefault=False))

    def check_raster_and_mask(self, parameters, context) -> str | None:
        problem = require_embedding_raster(self.parameterAsRasterLayer(parameters, "INPUT", context))
        if problem:
            return problem
        if parameters.get("MASK") not in (None, "") and parameters.get("THRESHOLD") in (None, ""):
            return self.tr("A mask needs a threshold (cosine similarity, e.g. 0.8).")
        return None

    def run_search(self, query: dict, parameters, context, feedback, bridge) -> dict:
        """Run the operation with `query` (its photo or location keywords); load and style the outputs."""
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        values = self.engine_values(parameters, context)
        mask = self.parameterAsOutputLayer(parameters, "MASK", context) or None
        hits_path = self.parameterAsOutputLayer(parameters, "TOP_K_OUTPUT", context) or None
        params = {"raster_path": raster_layer_path(layer),
                  "out_path": self.parameterAsOutputLayer(parameters, "OUTPUT", context),
                  "hits_path": hits_path if values["top_k"] > 0 else None, "mask_path": mask, **query,
                  **{k: v for k, v in values.items() if v is not None},
                  **self.model_params(parameters, context, feedback)}
        result = self.run_job(params, feedback, bridge=bridge)
        out, hits = str(result["path"]), (str(result["hits_path"]) if result.get("hits_path") else None)
        for path in (out, hits, mask):
            if path:
                self.track_output(path)
        feedback.pushInfo(self.tr(f"{result['valid_pixels']} pixels compared with {result['references']} "
                                  f"{self.WHAT}(s) in {result['seconds']:.1f} s."))
        finish_output(context, out, self.output_name(f"{self.WHAT} similarity"), "OUTPUT", style_similarity,
                      hide_sources=(raster_layer_path(layer), quicklook_of(raster_layer_path(layer))))
        if hits:
            finish_output(context, hits, self.output_name(f"{self.WHAT} top places"), "TOP_K_OUTPUT", top_k_renderer)
        elif values["top_k"] > 0 and hits_path:
            feedback.pushWarning(self.tr("No similar places found (every peak is below the threshold)."))
        if mask and os.path.isfile(mask):
            finish_output(context, mask, self.output_name(f"{self.WHAT} mask"), "MASK")
        return {"OUTPUT": out, "TOP_K_OUTPUT": hits, "MASK": mask}
