"""The canvas tool: a click picks a reference point, shift-click adds another one."""
from __future__ import annotations

from qgis.core import QgsPointXY
from qgis.gui import QgsMapCanvas, QgsMapToolEmitPoint
from qgis.PyQt.QtCore import Qt, pyqtSignal


class SimilarityMapTool(QgsMapToolEmitPoint):
    """Emits `picked(point in canvas CRS, additive)`; additive is True for shift-click."""

    picked = pyqtSignal(QgsPointXY, bool)

    def __init__(self, canvas: QgsMapCanvas) -> None:
        super().__init__(canvas)
        self.setCursor(Qt.CrossCursor)

    def canvasReleaseEvent(self, event) -> None:  # noqa: N802
        if event.button() != Qt.LeftButton:
            return
        point = self.toMapCoordinates(event.pos())
        self.picked.emit(QgsPointXY(point), bool(event.modifiers() & Qt.ShiftModifier))
