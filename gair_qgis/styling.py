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

# qualitative palette (12 colours, colour-blind aware ordering); repeats with a shade change past 12 classes
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#e7ba52",
)
# similarity: dull and transparent where unlike the reference, hot and opaque where alike
SIMILARITY_STOPS = ((0.0, "#30123b", 0), (0.35, "#4662d7", 90), (0.6, "#1ae4b6", 170), (0.8, "#faba39", 230), (1.0, "#ff2a00", 255))
SEQUENTIAL_STOPS = ((0.0, "#440154", 255), (0.25, "#3b528b", 255), (0.5, "#21918c", 255), (0.75, "#5ec962", 255), (1.0, "#fde725", 255))


def class_color(index: int) -> QColor:
    color = QColor(PALETTE[index % len(PALETTE)])
    return color.darker(100 + 40 * (index // len(PALETTE)))


def paletted_renderer(layer: QgsRasterLayer, classes: list[tuple[int, str]], band: int = 1) -> QgsPalettedRasterRenderer:
    """One colour per class value, labelled with the class name (shown in the legend)."""
    items = [
        QgsPalettedRasterRenderer.Class(int(value), class_color(i), str(name)) for i, (value, name) in enumerate(classes)
    ]
    renderer = QgsPalettedRasterRenderer(layer.dataProvider(), band, items)
    layer.setRenderer(renderer)
    return renderer


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


def save_default_style(layer: QgsMapLayer) -> None:
    """Persist the style so the file opens styled anywhere: a .qml beside file rasters, the GeoPackage's
    layer_styles table for vectors."""
    if isinstance(layer, QgsVectorLayer) and layer.dataProvider().storageType().lower().startswith("geopackage"):
        layer.saveStyleToDatabase(layer.name(), "GAIR default style", True, "")
        return
    source = layer.source().split("|")[0]
    if os.path.isfile(source):
        layer.saveNamedStyle(os.path.splitext(source)[0] + ".qml")
