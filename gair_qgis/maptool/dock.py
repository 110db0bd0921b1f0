"""Small dock for the similarity map tool: embedding raster picker (embedding rasters only), embed the visible
extent of a Sentinel-2 raster, top-k, threshold slider, positive/negative examples (undo, save), keep results,
clear."""
from __future__ import annotations

from qgis.core import QgsMapLayerProxyModel, QgsProject, QgsRasterLayer
from qgis.gui import QgsDockWidget, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..layers import is_embedding_raster, raster_kind
from ..styling import band_range
from . import jobs
from .controller import INSTRUCTION, SimilarityController
from .tool import SimilarityMapTool

HELP = ("<b>Click</b>: a place you look for (positive example). <b>Ctrl-click</b> or <b>right-click</b>: a place "
        "you do not (negative). The map updates after each click.<br>Score: cosine to the positives' mean minus "
        "cosine to the negatives' mean. This mean difference works from one click and has nothing to tune; a "
        "classifier fitted to a few clicks in 64 dimensions would follow its regularisation more than the ground "
        "(for many labels: Save examples, then Train classifier).<br>Large rasters: a coarse map first, then the "
        "view in detail.")


def is_gair_output(layer) -> bool:
    """Any raster GAIR wrote (embeddings or derived classes, similarity...): not a Sentinel-2 source."""
    return layer.providerType() != "gdal" or raster_kind(layer) is not None


class SimilarityDock(QgsDockWidget):
    closed = pyqtSignal()

    def __init__(self, iface, project: QgsProject | None = None) -> None:
        super().__init__("GAIR similarity")
        self.setObjectName("GAIRSimilarityDock")
        self.iface = iface
        canvas = iface.mapCanvas()
        self.project = project or QgsProject.instance()
        self.controller = SimilarityController(canvas, self.project)
        self.tool = SimilarityMapTool(canvas)
        self.tool.picked.connect(self.controller.handle_click)

        self.layer_box = QgsMapLayerComboBox()
        self.layer_box.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.layer_box.setAllowEmptyLayer(True)
        self.layer_box.setToolTip("Embedding rasters only (written by Embed raster or embedded here)")
        self.source_box = QgsMapLayerComboBox()
        self.source_box.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.source_box.setAllowEmptyLayer(True)
        self.source_box.setToolTip("A Sentinel-2 raster to embed where the map shows it")
        self._refresh_lists()
        self.layer_box.setLayer(None)
        self.source_box.setLayer(None)
        self.layer_box.layerChanged.connect(self._layer_changed)
        self.source_box.layerChanged.connect(self._source_changed)
        self.project.layersAdded.connect(self._refresh_lists)
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
        clear.setToolTip("Forget every example and remove the results")
        clear.clicked.connect(lambda: self.controller.clear())
        self.undo_button = QPushButton("Undo click")
        self.undo_button.setToolTip("Forget the last example and search again")
        self.undo_button.setEnabled(False)
        self.undo_button.clicked.connect(lambda: self.controller.undo())
        self.class_name = QLineEdit()
        self.class_name.setPlaceholderText("positive")
        self.class_name.setToolTip("Class of the positive examples in saved examples (negatives: 'other'); empty: "
                                   "'positive' and 'negative'")
        self.save_examples_button = QPushButton("Save examples…")
        self.save_examples_button.setToolTip("Save the clicked examples as a GeoPackage point layer (fields label "
                                             "and class) for Train classifier")
        self.save_examples_button.setEnabled(False)
        self.save_examples_button.clicked.connect(self.save_examples)
        self.controller.examples_changed.connect(lambda n: self.undo_button.setEnabled(n > 0))
        self.controller.examples_changed.connect(lambda n: self.save_examples_button.setEnabled(n > 0))
        self.help = QLabel(HELP)
        self.help.setWordWrap(True)
        self.photo_button = QPushButton("Search by photo…")
        self.photo_button.setToolTip("Where the embedding raster looks like a street-view photo you pick (GAIR aligns "
                                     "photos with the imagery; the model must be the raster's)")
        self.photo_button.clicked.connect(self.search_by_photo)
        self.location_button = QPushButton("Search by location")
        self.location_button.setCheckable(True)
        self.location_button.setToolTip("Then click the map: where the raster looks like what GAIR learned for that "
                                        "location (its location embedding: the ground typical there)")
        self.location_button.toggled.connect(lambda on: setattr(self.controller, "location_mode", on))
        self.controller.busy_changed.connect(lambda _busy: self.location_button.setChecked(
            self.controller.location_mode))
        self.photo_button.setVisible(jobs.has_operation("search_by_photo"))
        self.location_button.setVisible(jobs.has_operation("search_by_location"))
        self.keep_button = QPushButton("Keep results")
        self.keep_button.setToolTip("Save the similarity raster and top places beside the project file (or in a "
                                    "folder you choose) so the project keeps them; otherwise they are temporary")
        self.keep_button.setEnabled(False)
        self.keep_button.clicked.connect(self.keep_results)
        self.controller.results_changed.connect(self.keep_button.setEnabled)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setVisible(False)
        self.status = QLabel(INSTRUCTION)
        self.status.setWordWrap(True)
        self.controller.status.connect(self.status.setText)
        self.controller.busy_changed.connect(self.progress.setVisible)
        self.controller.progress.connect(lambda percent: self.progress.setValue(round(percent)))
        self.controller.result_ready.connect(lambda: self._threshold_changed(self.slider.value()))
        self.controller.embedding_ready.connect(self.layer_box.setLayer)

        form = QFormLayout()
        form.addRow("Embedding raster", self.layer_box)
        form.addRow("Sentinel-2 raster", self.source_box)
        form.addRow("Model", self.model)
        form.addRow("", self.embed_button)
        form.addRow("Top places", self.top_k)
        threshold_row = QHBoxLayout()
        threshold_row.addWidget(self.slider)
        threshold_row.addWidget(self.threshold_label)
        form.addRow("Threshold", threshold_row)
        form.addRow("Class name", self.class_name)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addLayout(form)
        example_buttons = QHBoxLayout()
        example_buttons.addWidget(self.undo_button)
        example_buttons.addWidget(self.save_examples_button)
        layout.addLayout(example_buttons)
        modal_buttons = QHBoxLayout()
        modal_buttons.addWidget(self.photo_button)
        modal_buttons.addWidget(self.location_button)
        layout.addLayout(modal_buttons)
        buttons = QHBoxLayout()
        buttons.addWidget(self.keep_button)
        buttons.addWidget(clear)
        layout.addLayout(buttons)
        layout.addWidget(self.help)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.setWidget(body)
        self._source_changed(self.source_box.currentLayer())

    def _refresh_lists(self, *_) -> None:
        """Embedding rasters in the first list, other (source) rasters in the second; GAIR's derived rasters in
        neither."""
        rasters = [layer for layer in self.project.mapLayers().values() if isinstance(layer, QgsRasterLayer)]
        embeddings = [layer for layer in rasters if is_embedding_raster(layer)]
        self.layer_box.setExceptedLayerList([layer for layer in rasters if layer not in embeddings])
        self.source_box.setExceptedLayerList([layer for layer in rasters if is_gair_output(layer)])

    def listed_layers(self, box: QgsMapLayerComboBox | None = None) -> list:
        box = box or self.layer_box
        return [box.layer(i) for i in range(box.count()) if box.layer(i) is not None]

    def _layer_changed(self, layer) -> None:
        self.controller.set_embedding_layer(layer if is_embedding_raster(layer) else None)

    def _source_changed(self, layer) -> None:
        self.embed_button.setEnabled(layer is not None)
        self.model.setEnabled(layer is not None)

    def _embed_visible(self) -> None:
        layer = self.source_box.currentLayer()
        if layer is not None:
            self.controller.embed_visible_extent(layer, self.model.filePath() or None)

    def choose_folder(self) -> str:
        """Where to keep results of an unsaved project (a folder dialog; tests replace it)."""
        return QFileDialog.getExistingDirectory(self, "Keep GAIR results in folder")

    def choose_examples_path(self) -> str:
        """Where to save the examples (a file dialog; tests replace it)."""
        path, _ = QFileDialog.getSaveFileName(self, "Save GAIR examples", self.controller.default_keep_folder() or "",
                                              "GeoPackage (*.gpkg)")
        return path if not path or path.lower().endswith(".gpkg") else path + ".gpkg"

    def choose_photo(self) -> str:
        """A street-view photo to search by (a file dialog; tests replace it)."""
        path, _ = QFileDialog.getOpenFileName(self, "Search by street-view photo", "",
                                              "Photos (*.jpg *.jpeg *.png *.JPG *.JPEG *.PNG);;All files (*)")
        return path

    def search_by_photo(self) -> None:
        photo = self.choose_photo()
        if photo:
            self.controller.search_by_photo(photo)

    def save_examples(self):
        path = self.choose_examples_path()
        return self.controller.save_examples(path, self.class_name.text()) if path else None

    def keep_results(self) -> list[str]:
        folder = self.controller.default_keep_folder() or self.choose_folder()
        if not folder:
            return []
        return self.controller.keep_results(folder)

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
        for signal in (self.project.layersAdded,):
            try:
                signal.disconnect(self._refresh_lists)
            except TypeError:  # shut down before
                pass
        self.controller.shutdown()
