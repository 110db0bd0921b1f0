"""The clicked examples of a few-shot search: positives and negatives in click order (for undo), their markers on the
canvas, and "Save examples" as a GeoPackage point layer the classifier tools take (class field `class`)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsField,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.gui import QgsMapCanvas, QgsRubberBand
from qgis.PyQt.QtCore import QVariant
from qgis.PyQt.QtGui import QColor

POSITIVE, NEGATIVE = "positive", "negative"
CLASS_FIELD, LABEL_FIELD = "class", "label"  # train_classifier's --field is `class`
OTHER_CLASS = "other"  # the negatives' class when the positives carry a class name
EXAMPLES_LAYER = "gair_examples"


@dataclass(frozen=True)
class Example:
    point: QgsPointXY  # in the embedding raster's CRS (what the engine gets)
    canvas_point: QgsPointXY  # where the marker is drawn
    positive: bool


class Examples:
    """Clicked examples in order, drawn as green crosses (positive) and red x's (negative)."""

    def __init__(self, canvas: QgsMapCanvas) -> None:
        self.items: list[Example] = []
        self.canvas = canvas
        self.markers = {True: self._band("#00b050", QgsRubberBand.ICON_CROSS),
                        False: self._band("#e0002a", QgsRubberBand.ICON_X)}

    def _band(self, colour: str, icon) -> QgsRubberBand:
        band = QgsRubberBand(self.canvas, QgsWkbTypes.PointGeometry)
        band.setColor(QColor(colour))
        band.setSecondaryStrokeColor(QColor("white"))  # an outline: visible over any heatmap colour
        band.setIconSize(14)
        band.setIcon(icon)
        band.setWidth(3)
        return band

    @property
    def positives(self) -> list[QgsPointXY]:
        return [e.point for e in self.items if e.positive]

    @property
    def negatives(self) -> list[QgsPointXY]:
        return [e.point for e in self.items if not e.positive]

    def add(self, point: QgsPointXY, canvas_point: QgsPointXY, positive: bool) -> None:
        self.items.append(Example(QgsPointXY(point), QgsPointXY(canvas_point), positive))
        self.markers[positive].addPoint(QgsPointXY(canvas_point))

    def undo(self) -> Example | None:
        """Forget the last click; None when there is none."""
        if not self.items:
            return None
        last = self.items.pop()
        self._redraw()
        return last

    def clear(self) -> None:
        self.items = []
        self._redraw()

    def _redraw(self) -> None:
        for positive, band in self.markers.items():
            band.reset(QgsWkbTypes.PointGeometry)
            for example in self.items:
                if example.positive == positive:
                    band.addPoint(example.canvas_point, False)
            band.updatePosition()
            band.update()

    def remove_markers(self) -> None:
        for band in self.markers.values():
            if band.scene() is not None:
                self.canvas.scene().removeItem(band)

    def save(self, path: str, crs: QgsCoordinateReferenceSystem, class_name: str = "",
             project: QgsProject | None = None) -> str:
        """Write the examples as points (raster CRS) with `label` positive/negative and `class`: the class name
        for positives (default "positive") and "other" for negatives (default "negative"); the file appears only
        when complete (written under a temporary name first). Returns the path."""
        if not self.items:
            raise ValueError("no examples to save: click the map first")
        layer = QgsVectorLayer(f"Point?crs={crs.authid() or 'EPSG:4326'}", EXAMPLES_LAYER, "memory")
        if not crs.authid():
            layer.setCrs(crs)
        layer.dataProvider().addAttributes([QgsField(LABEL_FIELD, QVariant.String),
                                            QgsField(CLASS_FIELD, QVariant.String)])
        layer.updateFields()
        name = class_name.strip()
        features = []
        for example in self.items:
            feature = QgsFeature(layer.fields())
            feature.setGeometry(QgsGeometry.fromPointXY(example.point))
            label = POSITIVE if example.positive else NEGATIVE
            feature.setAttributes([label, (name if example.positive else OTHER_CLASS) if name else label])
            features.append(feature)
        layer.dataProvider().addFeatures(features)
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName, options.layerName = "GPKG", EXAMPLES_LAYER
        tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.part.gpkg")
        context = (project or QgsProject.instance()).transformContext()
        error, message, *_ = QgsVectorFileWriter.writeAsVectorFormatV3(layer, tmp, context, options)
        if error != QgsVectorFileWriter.NoError:
            for leftover in (tmp, tmp + "-wal", tmp + "-shm"):
                if os.path.exists(leftover):
                    os.remove(leftover)
            raise OSError(f"cannot write {path}: {message}")
        os.replace(tmp, path)
        return path
