"""Embed features: the Sentinel-2 GAIR embedding at each point / over each polygon, as attribute fields."""
from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)

from ..base import GAIRAlgorithm, raster_layer_path, require_embedding_raster
from .embed_raster import MODES

POLYGONS = ("mean", "centroid")


class Algorithm(GAIRAlgorithm):
    NAME, DISPLAY, GROUP = "embed_features", "Embed features", "embeddings"
    HELP = (
        "Adds the GAIR embedding of a Sentinel-2 raster to every feature of a layer, as fields gair_000, "
        "gair_001, ... plus gair_status (why a feature got none: outside the raster, nodata...).\n\n"
        "Points: the embedding at the point, from a crop centred on it. Polygons: the mean over the pixels "
        "inside (or at the centroid). Lines use their centroid. Layers and rasters in any CRS.\n\n"
        "Same space as: an embedding raster made with the same model and fewer dimensions, so the feature "
        "vectors go through its PCA and compare with its pixels (e.g. as similarity references)."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFeatureSource("INPUT", self.tr("Features"),
                                                              [QgsProcessing.TypeVectorAnyGeometry]))
        self.addParameter(QgsProcessingParameterRasterLayer("RASTER", self.tr("Sentinel-2 raster")))
        self.addParameter(QgsProcessingParameterEnum("POLYGONS", self.tr("Polygons"),
                                                     ["mean over the polygon", "at the centroid"], defaultValue=0))
        space = QgsProcessingParameterRasterLayer("SPACE", self.tr("Same space as embedding raster (optional)"),
                                                  optional=True)
        space.setFlags(space.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(space)
        mode = QgsProcessingParameterEnum("MODE", self.tr("Query mode"), list(MODES), defaultValue=0)
        mode.setFlags(mode.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(mode)
        self.add_model_parameter()
        self.add_embedded_count_output()
        self.addParameter(QgsProcessingParameterVectorDestination("OUTPUT", self.tr("Features with embeddings")))

    def validate(self, parameters, context):
        from ...engine_link import engine
        from ...engine_link import engine_attrs
        SourceRaster = engine_attrs("pipeline.source", "SourceRaster")

        raster = self.parameterAsRasterLayer(parameters, "RASTER", context)
        with SourceRaster(raster_layer_path(raster), engine.GAIRConfig()):
            pass  # CRS, north-up grid and Sentinel-2 bands, with errors that say how to fix them
        if parameters.get("SPACE"):
            return require_embedding_raster(self.parameterAsRasterLayer(parameters, "SPACE", context))
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        from ...engine_link import engine

        space = self.raster_path(parameters, "SPACE", context) if parameters.get("SPACE") else None
        result = engine.embed_features(
            self.raster_path(parameters, "RASTER", context), self.vector_path(parameters, "INPUT", context, feedback),
            self.parameterAsOutputLayer(parameters, "OUTPUT", context), self.load_model(parameters, context, feedback),
            polygons=POLYGONS[self.parameterAsEnum(parameters, "POLYGONS", context)], space=space,
            mode=MODES[self.parameterAsEnum(parameters, "MODE", context)], **bridge.kwargs(),
        )
        return self.finish_layer_result(result, context, feedback)
