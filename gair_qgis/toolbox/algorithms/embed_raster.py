"""Embed raster: a Sentinel-2 raster -> continuous GAIR embedding raster (+ a georeferenced quicklook)."""
from __future__ import annotations

import os
import shutil
import tempfile

from qgis.core import (
    QgsProcessingOutputRasterLayer,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..base import GAIRAlgorithm, raster_layer_path
from ..outputs import finish_output

DTYPES = ("float32", "int16")
MODES = ("nili", "bilinear", "bicubic")


def clip_to_bounds(source: str, bounds: tuple[float, float, float, float], folder: str) -> str:
    """A VRT window of `source` over bounds (xmin, ymin, xmax, ymax in the source CRS); bands, descriptions and
    metadata are kept, nothing is resampled."""
    from osgeo import gdal

    xmin, ymin, xmax, ymax = bounds
    out = os.path.join(folder, os.path.splitext(os.path.basename(source))[0] + "_extent.vrt")
    dataset = gdal.Translate(out, source, format="VRT", projWin=[xmin, ymax, xmax, ymin])
    if dataset is None:
        from ...engine_link import engine

        raise engine.GAIRError("the chosen extent does not overlap the raster; pick an extent inside it")
    dataset = None
    return out


def georeference_quicklook(png: str, embedding_path: str) -> None:
    """Write a PAM sidecar so the quicklook PNG lands on the map over the embedding raster."""
    from osgeo import gdal

    source, look = gdal.Open(embedding_path), gdal.Open(png)
    x0, dx, _, y0, _, dy = source.GetGeoTransform()
    sx, sy = source.RasterXSize / look.RasterXSize, source.RasterYSize / look.RasterYSize
    step = max(round(sx), round(sy))  # the engine keeps every step-th pixel along both axes
    look.SetGeoTransform((x0, dx * step, 0.0, y0, 0.0, dy * step))
    look.SetProjection(source.GetProjection())
    look = source = None


def run_embed_raster(input_path: str, output_path: str, *, bounds=None, model=None,
                     pixel_size_m: float | None = None, dims: int | None = None, dtype: str = "float32",
                     mode: str = "nili", progress=None, cancel=None) -> str:
    """engine.embed_raster on the whole raster or a window of it; shared by the algorithm and the map tool.
    `model`: a loaded model, or a model path / None for the one in the plugin settings."""
    from ...engine_link import engine

    from ...settings import load_model

    if not hasattr(model, "rs_tokens"):
        model = load_model(model)
    workdir = tempfile.mkdtemp(prefix="gair_embed_")
    try:
        source = clip_to_bounds(input_path, bounds, workdir) if bounds is not None else input_path
        out = engine.embed_raster(source, output_path, model, pixel_size_m=pixel_size_m, dims=dims, dtype=dtype,
                                  mode=mode, progress=progress, cancel=cancel)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    look = quicklook_of(str(out))
    if os.path.isfile(look):
        georeference_quicklook(look, str(out))
    return str(out)


def quicklook_of(path: str) -> str:
    return os.path.splitext(path)[0] + ".quicklook.png"


class Algorithm(GAIRAlgorithm):
    NAME, DISPLAY, GROUP = "embed_raster", "Embed raster", "embeddings"
    HELP = (
        "Turns a Sentinel-2 L2A raster (10 or 12 bands, any CRS) into a continuous GAIR embedding raster: one band "
        "per embedding dimension, on the input grid or at the pixel size you choose. Overlapping crops of the "
        "model's size are encoded and their implicit (NILI) fields blended, so there are no seams.\n\n"
        "Extent: embed only this part of the raster. Pixel size: output resolution in metres (empty: the "
        "input's). Dimensions: keep this many principal components (empty: all, e.g. 768); smaller files, same "
        "analyses. Int16 halves the size with a per-band scale. A quicklook PNG of three principal components "
        "is written beside the output.\n\nThe result feeds Cluster, Similarity search and Train classifier."
    )

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr("Sentinel-2 raster")))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", self.tr("Extent (empty: whole raster)"),
                                                       optional=True))
        pixel = QgsProcessingParameterNumber("PIXEL_SIZE", self.tr("Output pixel size, metres (empty: input's)"),
                                             QgsProcessingParameterNumber.Double, optional=True, minValue=0.0)
        self.addParameter(pixel)
        self.addParameter(QgsProcessingParameterNumber("DIMS", self.tr("Dimensions to keep (empty: all)"),
                                                       QgsProcessingParameterNumber.Integer, optional=True,
                                                       minValue=1))
        self.addParameter(QgsProcessingParameterEnum("DTYPE", self.tr("Data type"), list(DTYPES), defaultValue=0))
        mode = QgsProcessingParameterEnum("MODE", self.tr("Query mode"), list(MODES), defaultValue=0)
        mode.setHelp("nili: GAIR's implicit interpolation (best); bilinear/bicubic: plain token interpolation")
        mode.setFlags(mode.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(mode)
        self.add_model_parameter()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr("Embedding raster")))
        self.addOutput(QgsProcessingOutputRasterLayer("QUICKLOOK", self.tr("Quicklook")))

    def validate(self, parameters, context):
        from ...engine_link import engine
        from ...engine_link import engine_attrs
        SourceRaster = engine_attrs("pipeline.source", "SourceRaster")

        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        with SourceRaster(raster_layer_path(layer), engine.GAIRConfig()):
            pass  # opens it and checks CRS, north-up grid and the Sentinel-2 bands; errors explain the fix
        if parameters.get("EXTENT"):
            extent = self.parameterAsExtent(parameters, "EXTENT", context, layer.crs())
            if not extent.intersects(layer.extent()):
                return self.tr("The extent does not overlap the raster; choose an extent inside it.")
        return None

    def run_engine(self, parameters, context, feedback, bridge):
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        bounds = None
        if parameters.get("EXTENT"):
            extent = self.parameterAsExtent(parameters, "EXTENT", context, layer.crs()).intersect(layer.extent())
            bounds = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
        pixel = self.parameterAsDouble(parameters, "PIXEL_SIZE", context) if parameters.get("PIXEL_SIZE") else None
        dims = self.parameterAsInt(parameters, "DIMS", context) if parameters.get("DIMS") else None
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        model = self.load_model(parameters, context, feedback)
        feedback.pushInfo(self.tr(f"Embedding {layer.name()} into {output}"))
        out = run_embed_raster(
            raster_layer_path(layer), output, bounds=bounds, model=model, pixel_size_m=pixel or None,
            dims=dims, dtype=DTYPES[self.parameterAsEnum(parameters, "DTYPE", context)],
            mode=MODES[self.parameterAsEnum(parameters, "MODE", context)], **bridge.kwargs(),
        )
        self.track_output(out)
        finish_output(context, out, self.output_name("embedding"), "OUTPUT",
                      true_colour_sources=[raster_layer_path(layer)])
        results = {"OUTPUT": out, "QUICKLOOK": None}
        look = quicklook_of(out)
        if os.path.isfile(look):
            finish_output(context, look, self.output_name("embedding quicklook"), "QUICKLOOK",
                          load=context.willLoadLayerOnCompletion(out), visible=False)
            results["QUICKLOOK"] = look
        return results
