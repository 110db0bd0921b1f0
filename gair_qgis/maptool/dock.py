"""Small dock for the similarity map tool: raster picker, embed-visible-extent, top-k, threshold slider, clear."""
from __future__ import annotations

from qgis.core import QgsMapLayerProxyModel, QgsProject
from qgis.gui import QgsDockWidget, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..layers import is_embedding_raster
from ..styling import band_range
from .controller import SimilarityController
from .tool import SimilarityMapTool

HELP = (
    "Click the map to find places similar to that point; shift-click adds more reference points. "
    "With a source (Sentinel-2) raster chosen, first embed the visible extent."
)


class SimilarityDock(QgsDockWidget):
    closed = pyqtSignal()

    def __init__(self, iface, project: QgsProject | None = None) -> None:
        super().__init__("GAIR similarity")
        self.setObjectName("GAIRSimilarityDock")
        self.iface = iface
        canvas = iface.mapCanvas()
        self.controller = SimilarityController(canvas, project)
        self.tool = SimilarityMapTool(canvas)
        self.tool.picked.connect(self.controller.handle_click)

        self.layer_box = QgsMapLayerComboBox()
        self.layer_box.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.layer_box.setAllowEmptyLayer(True)
        self.layer_box.layerChanged.connect(self._layer_changed)
        self.model = QgsFileWidget()
        self.model.setFilter("GAIR models (*.pth *.pt *.ckpt *.onnx config.json);;All files (*)")
        self.model.setToolTip("Model for embedding a source raster; empty: the one in GAIR settings")
        self.embed_button = QPushButton("Embed visible extent")
        self.embed_button.setToolTip("Compute GAIR embeddings for the part of the source raster in view")
        self.embed_button.clicked.connect(self._embed_visible)
        self.top_k = QSpinBox()
        self.top_k.setRange(1, 500)
        self.top_k.setValue(self.controller.top_k)
        self.top_k.valueChanged.connect(lambda v: setattr(self.controller, "top_k", v))
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, 100)
        self.slider.setValue(0)
        self.slider.valueChanged.connect(self._threshold_changed)
        self.threshold_label = QLabel("show all")
        clear = QPushButton("Clear")
        clear.clicked.connect(self.controller.clear)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setVisible(False)
        self.status = QLabel(HELP)
        self.status.setWordWrap(True)
        self.controller.status.connect(self.status.setText)
        self.controller.busy_changed.connect(self.progress.setVisible)
        self.controller.result_ready.connect(lambda: self._threshold_changed(self.slider.value()))
        self.controller.embedding_ready.connect(self.layer_box.setLayer)

        form = QFormLayout()
        form.addRow("Raster", self.layer_box)
        form.addRow("Model", self.model)
        form.addRow("", self.embed_button)
        form.addRow("Top places", self.top_k)
        threshold_row = QHBoxLayout()
        threshold_row.addWidget(self.slider)
        threshold_row.addWidget(self.threshold_label)
        form.addRow("Threshold", threshold_row)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addLayout(form)
        layout.addWidget(clear)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.setWidget(body)
        self._layer_changed(self.layer_box.currentLayer())

    def _layer_changed(self, layer) -> None:
        embedding = is_embedding_raster(layer)
        self.controller.set_embedding_layer(layer if embedding else None)
        self.embed_button.setEnabled(layer is not None and not embedding)
        self.model.setEnabled(layer is not None and not embedding)

    def _embed_visible(self) -> None:
        layer = self.layer_box.currentLayer()
        if layer is not None:
            self.controller.embed_visible_extent(layer, self.model.filePath() or None)

    def _threshold_changed(self, position: int) -> None:
        layer = self.controller.similarity_layer
        if position == 0 or layer is None:
            self.threshold_label.setText("show all")
            self.controller.set_threshold(None)
            return
        vmin, vmax = band_range(layer)
        value = vmin + (vmax - vmin) * position / 100.0
        self.threshold_label.setText(f"≥ {value:.2f}")
        self.controller.set_threshold(value)

    def set_tool_active(self, active: bool) -> None:
        canvas = self.iface.mapCanvas()
        if active:
            canvas.setMapTool(self.tool)
        elif canvas.mapTool() is self.tool:
            canvas.unsetMapTool(self.tool)

    def closeEvent(self, event) -> None:  # noqa: N802
        self.set_tool_active(False)
        self.closed.emit()
        super().closeEvent(event)

    def shutdown(self) -> None:
        self.set_tool_active(False)
        self.controller.shutdown()
