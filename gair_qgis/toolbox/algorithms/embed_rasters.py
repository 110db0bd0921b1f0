"""Embed many rasters: several tiles or dates (layers and/or a manifest) -> one embedding raster each, in one shared
embedding space (one PCA), plus a VRT mosaic loaded as one layer."""
from __future__ import annotations

import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputRasterLayer,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
)

from ..base import GAIRAlgorithm, raster_layer_path
from ..outputs import output_layer_name


def gdal_opens_int8_vrt() -> bool:
    """GDAL >= 3.7 reads Int8 rasters (an int8 mosaic VRT); QGIS 3.22 on Debian 12 has GDAL 3.6."""
    from osgeo import gdal

    return int(gdal.VersionInfo()) >= 3070000


class Algorithm(GAIRAlgorithm):
    OPERATION, GROUP = "embed_rasters", "embeddings"

    def initAlgorithm(self, config=None):  # noqa: N802
        op = self.operation
        self.addParameter(QgsProcessingParameterMultipleLayers("INPUTS", self.tr(op.param("inputs").label),
                                                               QgsProcessing.TypeRaster, optional=True))
        manifest = op.param("manifest")
        param = QgsProcessingParameterFile(manifest.processing_name, self.tr(manifest.label), optional=True,
                                           fileFilter="Lists of rasters (*.txt *.csv);;All files (*)")
        param.setHelp(self.tr(manifest.help))
        self.addParameter(param)
        self.addParameter(QgsProcessingParameterExtent("EXTENT", self.tr(op.param("extent").label), optional=True))
        self.add_engine_parameters()
        self.add_pca_from_parameter()
        self.add_model_parameter()
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT",
                                                                  self.tr(op.param("output_dir").label)))
        self.addOutput(QgsProcessingOutputRasterLayer("MOSAIC", self.tr("Mosaic")))
        self.addOutput(QgsProcessingOutputNumber("EMBEDDED", self.tr("Rasters embedded")))
        self.addOutput(QgsProcessingOutputNumber("SKIPPED", self.tr("Rasters already done (skipped)")))

    def validate(self, parameters, context):
        if not parameters.get("INPUTS") and not parameters.get("MANIFEST"):
            return self.tr("Give the rasters to embed: pick layers, or a manifest file (one path per line).")
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        inputs = [raster_layer_path(layer) for layer in self.parameterAsLayerList(parameters, "INPUTS", context)]
        out_dir = self.parameterAsString(parameters, "OUTPUT", context)
        extent, extent_crs = self.extent_values(parameters, context)
        params = {"inputs": inputs or None, "output_dir": out_dir,
                  "manifest": self.parameterAsFile(parameters, "MANIFEST", context) or None,
                  "extent": extent, "extent_crs": extent_crs,
                  "pca_from": self.parameterAsFile(parameters, "PCA_FROM", context) or None,
                  **self.engine_values(parameters, context), **self.model_params(parameters, context, feedback)}
        if not inputs and not params["manifest"]:
            raise QgsProcessingException(self.validate(parameters, context))
        feedback.pushInfo(self.tr(f"Embedding {len(inputs) or 'the manifest'}'s rasters into {out_dir}"))
        result = self.run_job(params, feedback, bridge=bridge)
        feedback.pushInfo(self.tr(f"{len(result['outputs']) - len(result['skipped'])} embedded, "
                                  f"{len(result['skipped'])} already done; one space: {result['space']}"))
        mosaic = result["mosaics"][0] if result["mosaics"] else None
        if params["dtype"] == "int8" and not gdal_opens_int8_vrt():
            feedback.pushWarning(self.tr("This QGIS's GDAL cannot open an int8 VRT (it needs GDAL 3.7): the tiles "
                                         "are loaded one by one; choose the float32 type for a mosaic layer."))
            to_load = result["outputs"]
        else:
            to_load = result["mosaics"]
        for path in to_load:
            stem = os.path.splitext(os.path.basename(path))[0]
            context.addLayerToLoadOnCompletion(path, QgsProcessingContext.LayerDetails(
                output_layer_name(stem, "embedding"), context.project(), "MOSAIC"))
        return {"OUTPUT": out_dir, "MOSAIC": mosaic, "EMBEDDED": len(result["outputs"]) - len(result["skipped"]),
                "SKIPPED": len(result["skipped"])}
