"""Change between two dates: cosine distance of two embedding rasters, an Otsu change mask, changed-area polygons."""
from __future__ import annotations

import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)

from ...styling import band_range, sequential_renderer
from ..base import GAIRAlgorithm, raster_layer_path, require_embedding_raster
from ..outputs import finish_output


def style_change(layer) -> None:
    vmin, vmax = band_range(layer)
    sequential_renderer(layer, vmin, vmax)


class Algorithm(GAIRAlgorithm):
    OPERATION, GROUP = "change", "analysis"

    def initAlgorithm(self, config=None):  # noqa: N802
        op = self.operation
        for key, name in (("BEFORE", "before_path"), ("AFTER", "after_path")):
            self.addParameter(QgsProcessingParameterRasterLayer(key, self.tr(op.param(name).label)))
        self.add_engine_parameters()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr(op.param("out_path").label)))
        self.addParameter(QgsProcessingParameterRasterDestination("MASK", self.tr(op.param("mask_path").label),
                                                                  optional=True))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "POLYGONS", self.tr(op.param("polygons_path").label), QgsProcessing.TypeVectorPolygon, optional=True))
        self.addOutput(QgsProcessingOutputNumber("THRESHOLD", self.tr("Change threshold (cosine distance)")))
        self.addOutput(QgsProcessingOutputNumber("CHANGED_PIXELS", self.tr("Changed pixels")))

    def validate(self, parameters, context):
        for key in ("BEFORE", "AFTER"):
            problem = require_embedding_raster(self.parameterAsRasterLayer(parameters, key, context))
            if problem:
                return problem
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        before = self.parameterAsRasterLayer(parameters, "BEFORE", context)
        after = self.parameterAsRasterLayer(parameters, "AFTER", context)
        mask = self.parameterAsOutputLayer(parameters, "MASK", context) or None
        polygons = self.parameterAsOutputLayer(parameters, "POLYGONS", context) or None
        params = {"before_path": raster_layer_path(before), "after_path": raster_layer_path(after),
                  "out_path": self.parameterAsOutputLayer(parameters, "OUTPUT", context), "mask_path": mask,
                  "polygons_path": polygons,
                  **{k: v for k, v in self.engine_values(parameters, context).items() if v is not None}}
        result = self.run_job(params, feedback, bridge=bridge)
        out = self.track_output(str(result["path"]))
        for path in (mask, polygons):
            if path:
                self.track_output(path)
        how = "Otsu's threshold" if result["threshold_method"] == "otsu" else "the given threshold"
        feedback.pushInfo(self.tr(f"{result['changed_pixels']} of {result['valid_pixels']} pixels changed: cosine "
                                  f"distance above {result['threshold']:.4f} ({how})."))
        for area in result["areas"][:5]:
            feedback.pushInfo(self.tr(f"#{area['rank']}: mean change {area['mean_change']:.3f}, "
                                      f"{area['area_m2'] / 1e4:.2f} ha"))
        finish_output(context, out, self.output_name("change", "BEFORE"), "OUTPUT", style_change)
        if mask and os.path.isfile(mask):
            finish_output(context, mask, self.output_name("change mask", "BEFORE"), "MASK")
        if polygons and os.path.isfile(polygons):
            finish_output(context, polygons, self.output_name("changed areas", "BEFORE"), "POLYGONS")
        return {"OUTPUT": out, "MASK": mask, "POLYGONS": polygons, "THRESHOLD": result["threshold"],
                "CHANGED_PIXELS": result["changed_pixels"]}
