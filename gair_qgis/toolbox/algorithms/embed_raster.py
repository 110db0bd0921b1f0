"""Embed raster: a Sentinel-2 raster, product (.SAFE folder, .zip) or folder of band files -> continuous GAIR
embedding raster (+ a georeferenced quicklook)."""
from __future__ import annotations

import os

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputRasterLayer,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ...engine_calls import quicklook_of
from ..base import GAIRAlgorithm, raster_layer_path
from ..outputs import finish_output, output_layer_name


class Algorithm(GAIRAlgorithm):
    OPERATION, GROUP = "embed_raster", "embeddings"

    def initAlgorithm(self, config=None):  # noqa: N802
        op = self.operation
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr(op.param("input_path").label),
                                                            optional=True))
        product = QgsProcessingParameterFile(
            "PRODUCT", self.tr("…or a Sentinel-2 product file (.zip, or MTD_MSIL2A.xml / MTD_MSIL1C.xml of a .SAFE)"),
            optional=True, fileFilter="Sentinel-2 products (*.zip *.xml);;All files (*)")
        product.setHelp(self.tr("Bands are found by name; 20 m bands go onto the 10 m grid; the product's radiometric "
                                "offset is applied; Mask clouds uses its scene classification."))
        self.addParameter(product)
        self.addParameter(QgsProcessingParameterFile(
            "FOLDER", self.tr("…or a folder: a .SAFE product, or single-band files (B02.tif, …_B02_10m.jp2, …)"),
            behavior=QgsProcessingParameterFile.Folder, optional=True))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", self.tr(op.param("extent").label), optional=True))
        self.add_engine_parameters()
        self.add_pca_from_parameter()
        self.add_model_parameter()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr(op.param("output_path").label)))
        self.addOutput(QgsProcessingOutputRasterLayer("QUICKLOOK", self.tr("Quicklook")))

    def source(self, parameters, context) -> tuple[str, str, object]:
        """(path for the engine, a name for people, the raster layer or None) of the one input given."""
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context) if parameters.get("INPUT") else None
        given = [p for p in (self.parameterAsFile(parameters, "PRODUCT", context),
                             self.parameterAsFile(parameters, "FOLDER", context)) if p]
        if (layer is not None) + len(given) != 1:
            raise QgsProcessingException(self.tr(
                "Give one input: a raster layer, a Sentinel-2 product file, or a folder (.SAFE or band files)."))
        if layer is not None:
            return raster_layer_path(layer), layer.name(), layer
        path = given[0].rstrip("/\\")
        return path, os.path.basename(path), None

    def validate(self, parameters, context):
        # the raster's CRS, grid and bands are checked by the engine when the job starts (one error line)
        _, _, layer = self.source(parameters, context)
        if parameters.get("EXTENT") and layer is not None:
            extent = self.parameterAsExtent(parameters, "EXTENT", context, layer.crs())
            if not extent.intersects(layer.extent()):
                return self.tr("The extent does not overlap the raster; choose an extent inside it.")
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        path, name, layer = self.source(parameters, context)
        extent, extent_crs = self.extent_values(parameters, context, layer.crs() if layer is not None else None)
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        pca_from = self.parameterAsFile(parameters, "PCA_FROM", context) or None
        params = {"input_path": path, "output_path": output, "extent": extent, "extent_crs": extent_crs,
                  "pca_from": pca_from,
                  **self.engine_values(parameters, context), **self.model_params(parameters, context, feedback)}
        feedback.pushInfo(self.tr(f"Embedding {name} into {output}"))
        # the engine's log reaches the Processing log: the output size estimate, then "crop i/n, ~m:ss left"
        out = self.run_job(params, feedback, bridge=bridge)
        self.track_output(out)
        finish_output(context, out, output_layer_name(name, "embedding"), "OUTPUT",
                      true_colour_sources=[path] if layer is not None else [])
        results = {"OUTPUT": out, "QUICKLOOK": None}
        look = quicklook_of(out)
        if os.path.isfile(look):
            finish_output(context, look, output_layer_name(name, "embedding quicklook"), "QUICKLOOK",
                          load=context.willLoadLayerOnCompletion(out), visible=False)
            results["QUICKLOOK"] = look
        return results
