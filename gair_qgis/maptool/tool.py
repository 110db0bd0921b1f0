"""The canvas tool: a click adds a positive example; Ctrl-click or a right click adds a negative one."""
from __future__ import annotations

from qgis.core import QgsPointXY
from qgis.gui import QgsMapCanvas, QgsMapToolEmitPoint
from qgis.PyQt.QtCore import Qt, pyqtSignal


class SimilarityMapTool(QgsMapToolEmitPoint):
    """Emits `picked(point in canvas CRS, negative)`; negative for Ctrl + left button and for the right button."""

    picked = pyqtSignal(QgsPointXY, bool)

    def __init__(self, canvas: QgsMapCanvas) -> None:
        super().__init__(canvas)
        self.setCursor(Qt.CrossCursor)

    def canvasReleaseEvent(self, event) -> None:  # noqa: N802
        if event.button() not in (Qt.LeftButton, Qt.RightButton):
            return
        negative = event.button() == Qt.RightButton or bool(event.modifiers() & Qt.ControlModifier)
        self.picked.emit(QgsPointXY(self.toMapCoordinates(event.pos())), negative)
