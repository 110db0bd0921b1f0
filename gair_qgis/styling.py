"""Renderers for GAIR outputs, saved as the layer's default style so any later load (GUI, qgis_process,
another project) shows the same colours: class rasters paletted with class names, similarity as a ramp where the
most similar places stand out, confidence as a sequential ramp, top-k points as ranked stars."""
from __future__ import annotations

import os

from qgis.core import (
    QgsColorRampShader,
    QgsMapLayer,
    QgsMarkerSymbol,
    QgsPalettedRasterRenderer,
    QgsPalLayerSettings,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
    QgsSingleSymbolRenderer,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtGui import QColor

# similarity: dull and transparent where unlike the reference, hot and opaque where alike
SIMILARITY_STOPS = ((0.0, "#30123b", 0), (0.4, "#4662d7", 70), (0.7, "#1ae4b6", 150), (0.85, "#faba39", 220),
                    (1.0, "#ff2a00", 255))
SEQUENTIAL_STOPS = ((0.0, "#440154", 255), (0.25, "#3b528b", 255), (0.5, "#21918c", 255), (0.75, "#5ec962", 255),
                    (1.0, "#fde725", 255))


def class_colors(count: int) -> list[QColor]:
    """The engine's class palette, so the GeoTIFF colour table and the QGIS style agree."""
    from .engine_link import engine_attrs

    return [QColor(*rgb) for rgb in engine_attrs("io.palette", "palette")(count)]


def paletted_renderer(layer: QgsRasterLayer, classes: list[tuple[int, str]],
                      band: int = 1) -> QgsPalettedRasterRenderer:
    """One colour per class value, labelled with the class name (shown in the legend)."""
    colors = class_colors(len(classes))
    items = [QgsPalettedRasterRenderer.Class(int(value), color, str(name))
             for (value, name), color in zip(classes, colors)]
    renderer = QgsPalettedRasterRenderer(layer.dataProvider(), band, items)
    layer.setRenderer(renderer)
    return renderer


def class_raster_renderer(layer: QgsRasterLayer) -> QgsPalettedRasterRenderer:
    """Paletted renderer for a GAIR class raster (value v is the v-th class name stored in the file)."""
    names = read_class_names(layer.source().split("|")[0])
    return paletted_renderer(layer, [(i + 1, name) for i, name in enumerate(names)])


def read_class_names(path: str) -> list[str]:
    """Class names the engine stored in a class raster (GAIR_CLASSES tag; value v is names[v - 1])."""
    import json

    from .layers import raster_tag

    return json.loads(raster_tag(path, "GAIR_CLASSES") or "[]")


def class_polygon_renderer(layer: QgsVectorLayer, value_field: str = "class", name_field: str = "name") -> None:
    """Categories per class value, coloured like the class raster, labelled with the class names."""
    from qgis.core import QgsCategorizedSymbolRenderer, QgsFillSymbol, QgsRendererCategory

    values = sorted({f[value_field] for f in layer.getFeatures()})
    names = {f[value_field]: f[name_field] for f in layer.getFeatures()} if layer.fields().indexOf(name_field) >= 0 \
        else {}
    colors = class_colors(max(values) if values else 0)
    categories = []
    for value in values:
        symbol = QgsFillSymbol.createSimple({"color": colors[int(value) - 1].name(), "outline_color": "#00000080",
                                             "outline_width": "0.1"})
        categories.append(QgsRendererCategory(value, symbol, str(names.get(value, value))))
    layer.setRenderer(QgsCategorizedSymbolRenderer(value_field, categories))


def _ramp_renderer(layer: QgsRasterLayer, vmin: float, vmax: float, stops, clip: bool, band: int = 1):
    span = (vmax - vmin) or 1.0
    items = []
    for frac, hex_color, alpha in stops:
        color = QColor(hex_color)
        color.setAlpha(alpha)
        value = vmin + frac * span
        items.append(QgsColorRampShader.ColorRampItem(value, color, f"{value:.2f}"))
    ramp = QgsColorRampShader(vmin, vmax)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    ramp.setColorRampItemList(items)
    ramp.setClip(clip)
    shader = QgsRasterShader(vmin, vmax)
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), band, shader)
    renderer.setClassificationMin(vmin)
    renderer.setClassificationMax(vmax)
    layer.setRenderer(renderer)
    return renderer


def similarity_renderer(layer: QgsRasterLayer, vmin: float, vmax: float, threshold: float | None = None):
    """Ramp from `threshold` (values below are not drawn) or `vmin` to `vmax`."""
    low = vmin if threshold is None else max(vmin, min(threshold, vmax))
    return _ramp_renderer(layer, low, vmax, SIMILARITY_STOPS, clip=threshold is not None)


def sequential_renderer(layer: QgsRasterLayer, vmin: float, vmax: float):
    return _ramp_renderer(layer, vmin, vmax, SEQUENTIAL_STOPS, clip=False)


def band_range(layer: QgsRasterLayer, band: int = 1) -> tuple[float, float]:
    from qgis.core import QgsRasterBandStats

    stats = layer.dataProvider().bandStatistics(band, QgsRasterBandStats.Min | QgsRasterBandStats.Max)
    return float(stats.minimumValue), float(stats.maximumValue)


def top_k_renderer(layer: QgsVectorLayer, rank_field: str = "rank") -> None:
    """Yellow stars with a dark outline, labelled with their rank (1 = most similar)."""
    symbol = QgsMarkerSymbol.createSimple(
        {"name": "star", "color": "#fde725", "outline_color": "#1d2b44", "outline_width": "0.5", "size": "5"}
    )
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    if layer.fields().indexOf(rank_field) >= 0:
        settings = QgsPalLayerSettings()
        settings.fieldName = rank_field
        settings.enabled = True
        fmt = QgsTextFormat()
        fmt.setSize(9)
        fmt.setColor(QColor("#ffffff"))
        buffer = QgsTextBufferSettings()
        buffer.setEnabled(True)
        buffer.setColor(QColor("#1d2b44"))
        fmt.setBuffer(buffer)
        settings.setFormat(fmt)
        settings.dist = 1.5
        layer.setLabeling(QgsVectorLayerSimpleLabeling(settings))
        layer.setLabelsEnabled(True)


def sentinel2_rgb_bands(path: str) -> tuple[int, int, int] | None:
    """1-based raster bands holding Sentinel-2 B4/B3/B2, by band description or, without descriptions, by the
    10/12/13-band layouts (the engine's band mapping); None when the raster is not recognisably Sentinel-2."""
    from osgeo import gdal

    from .engine_link import engine, engine_attrs

    resolve_bands = engine_attrs("io.bands", "resolve_bands")
    dataset = gdal.Open(path)
    if dataset is None or dataset.GetMetadataItem("GAIR_KIND") or dataset.GetMetadataItem("GAIR_SPACE"):
        return None  # a GAIR output: its bands are embedding dimensions, not reflectances
    descriptions = [dataset.GetRasterBand(i).GetDescription() for i in range(1, dataset.RasterCount + 1)]
    dataset = None
    model_bands = tuple(engine.GAIRConfig().rs_bands)
    try:
        indexes = resolve_bands(descriptions, model_bands)
    except engine.GAIRError:
        return None
    return tuple(indexes[model_bands.index(name)] + 1 for name in ("B4", "B3", "B2"))


def true_color_renderer(layer: QgsRasterLayer, percentiles: tuple[float, float] = (2.0, 98.0)) -> bool:
    """Red/green/blue from the Sentinel-2 bands B4/B3/B2, stretched between percentiles; False (layer unchanged)
    when the raster is not a Sentinel-2 raster."""
    from qgis.core import QgsContrastEnhancement, QgsMultiBandColorRenderer

    if layer.providerType() != "gdal":
        return False
    bands = sentinel2_rgb_bands(layer.source().split("|")[0])
    if bands is None:
        return False
    provider = layer.dataProvider()
    renderer = QgsMultiBandColorRenderer(provider, *bands)
    for band, setter in zip(bands, (renderer.setRedContrastEnhancement, renderer.setGreenContrastEnhancement,
                                    renderer.setBlueContrastEnhancement)):
        low, high = provider.cumulativeCut(band, percentiles[0] / 100.0, percentiles[1] / 100.0)
        enhancement = QgsContrastEnhancement(provider.dataType(band))
        enhancement.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
        enhancement.setMinimumValue(low)
        enhancement.setMaximumValue(high)
        setter(enhancement)
    layer.setRenderer(renderer)
    return True


def save_default_style(layer: QgsMapLayer) -> None:
    """Persist the style so the file opens styled anywhere: a .qml beside file rasters, the GeoPackage's
    layer_styles table for vectors."""
    if isinstance(layer, QgsVectorLayer) and layer.dataProvider().isSaveAndLoadStyleToDatabaseSupported():
        error = layer.saveStyleToDatabase(layer.name(), "GAIR default style", True, "")
        if error:
            raise RuntimeError(f"could not store the style in {layer.source()}: {error}")
        return
    source = layer.source().split("|")[0]
    if os.path.isfile(source):
        layer.saveNamedStyle(os.path.splitext(source)[0] + ".qml")
