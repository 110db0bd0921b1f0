"""What the map tool does with clicks, free of widgets so tests can drive it: reference points in, a similarity
layer and top-k points out, computed in a QgsTask off the GUI thread and placed in the "GAIR" group."""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateTransform,
    QgsMessageLog,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsTask,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.gui import QgsMapCanvas, QgsRubberBand
from qgis.PyQt.QtCore import QObject, pyqtSignal
from qgis.PyQt.QtGui import QColor

from ..engine_calls import defaults
from ..layers import add_to_gair_group
from ..styling import band_range, similarity_renderer, top_k_renderer

SIMILARITY_NAME = "GAIR similarity"
TOP_K_NAME = "GAIR top-k"


class EngineTask(QgsTask):
    """Runs `work(progress, cancel)` in a worker thread; `done(task)` is called on the GUI thread."""

    def __init__(self, description: str, work, done) -> None:
        super().__init__(description, QgsTask.CanCancel)
        self.work, self.done = work, done
        self.result, self.error = None, None

    def run(self) -> bool:
        try:
            self.result = self.work(lambda f: self.setProgress(100.0 * f), self.isCanceled)
            return True
        except Exception as exc:  # reported on the GUI thread in finished()
            self.error = exc
            return False

    def finished(self, ok: bool) -> None:
        self.done(self)


class SimilarityController(QObject):
    """State of one similarity session: embedding raster, reference points, threshold, result layers."""

    status = pyqtSignal(str)
    busy_changed = pyqtSignal(bool)
    result_ready = pyqtSignal()
    embedding_ready = pyqtSignal(QgsRasterLayer)

    def __init__(self, canvas: QgsMapCanvas, project: QgsProject | None = None) -> None:
        super().__init__()
        self.canvas, self.project = canvas, project or QgsProject.instance()
        self.embedding_layer: QgsRasterLayer | None = None
        self.references: list[QgsPointXY] = []  # in the embedding raster's CRS
        self.top_k = defaults("similarity_search")["top_k"]
        self.threshold: float | None = None
        self.similarity_layer: QgsRasterLayer | None = None
        self.points_layer: QgsVectorLayer | None = None
        self.task: EngineTask | None = None
        self.workdir = tempfile.mkdtemp(prefix="gair_maptool_")
        self.markers = QgsRubberBand(canvas, QgsWkbTypes.PointGeometry)
        self.markers.setColor(QColor("#ff00ff"))
        self.markers.setIconSize(12)
        self.markers.setIcon(QgsRubberBand.ICON_X)
        self.markers.setWidth(3)

    # --- inputs ---------------------------------------------------------------------------------------------
    def set_embedding_layer(self, layer: QgsRasterLayer | None) -> None:
        if layer is not self.embedding_layer:
            self.clear()
        self.embedding_layer = layer

    def handle_click(self, point: QgsPointXY, additive: bool) -> None:
        """`point` is in the canvas CRS; shift-click (additive) adds a reference, a plain click replaces them."""
        if self.embedding_layer is None:
            self.status.emit("Choose an embedding raster first (or embed the visible extent of a source raster).")
            return
        to_raster = QgsCoordinateTransform(self.canvas.mapSettings().destinationCrs(), self.embedding_layer.crs(),
                                           self.project)
        raster_point = to_raster.transform(point)
        if not self.embedding_layer.extent().contains(raster_point):
            self.status.emit("That point is outside the embedding raster; click inside it.")
            return
        if not additive:
            self.references = []
            self.markers.reset(QgsWkbTypes.PointGeometry)
        self.references.append(QgsPointXY(raster_point))
        self.markers.addPoint(QgsPointXY(point))
        self.run_search()

    def set_threshold(self, value: float | None) -> None:
        """Hide similarities below `value` (a pure restyle, no recomputation)."""
        self.threshold = value
        if self.similarity_layer is not None:
            vmin, vmax = band_range(self.similarity_layer)
            similarity_renderer(self.similarity_layer, vmin, vmax, value)
            self.similarity_layer.triggerRepaint()

    # --- work -----------------------------------------------------------------------------------------------
    def run_search(self) -> None:
        from ..engine_calls import run_similarity

        if self.task is not None:
            self.task.cancel()  # the newest click wins
        layer = self.embedding_layer
        path = layer.source().split("|")[0]
        crs_wkt = layer.crs().toWkt()
        points = [(p.x(), p.y()) for p in self.references]
        stem = os.path.join(self.workdir, f"similarity_{uuid.uuid4().hex[:8]}")
        top_k = self.top_k

        def work(progress, cancel):
            return run_similarity(path, points, crs_wkt, stem + ".tif", stem + ".gpkg", top_k, progress, cancel)

        self._start(EngineTask("GAIR similarity search", work, self._search_done))

    def embed_visible_extent(self, source: QgsRasterLayer, model_path: str | None = None) -> None:
        """Embed what the canvas shows of `source`; the result becomes the embedding raster."""
        from ..engine_calls import run_embed_raster

        extent = QgsCoordinateTransform(self.canvas.mapSettings().destinationCrs(), source.crs(),
                                        self.project).transformBoundingBox(self.canvas.extent())
        extent = extent.intersect(source.extent())
        if extent.isEmpty():
            self.status.emit("The source raster is not in view; zoom to it first.")
            return
        path = source.source().split("|")[0]
        bounds = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
        out = os.path.join(self.workdir, f"embedding_{uuid.uuid4().hex[:8]}.tif")

        def work(progress, cancel):
            return run_embed_raster(path, out, extent=bounds, model=model_path, progress=progress, cancel=cancel)

        self._start(EngineTask("GAIR embed visible extent", work, self._embed_done))

    def _start(self, task: EngineTask) -> None:
        self.task = task
        self.busy_changed.emit(True)
        self.status.emit(task.description() + "…")
        QgsApplication.taskManager().addTask(task)

    @property
    def busy(self) -> bool:
        return self.task is not None

    def wait_until_idle(self, timeout: float = 60.0) -> bool:
        """Process Qt events until the running task has finished (scripts, tests); False on timeout."""
        import time

        from qgis.PyQt.QtCore import QCoreApplication

        deadline = time.monotonic() + timeout
        while self.busy:
            QCoreApplication.processEvents()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        QCoreApplication.processEvents()
        return True

    def _finish_task(self, task: EngineTask) -> bool:
        """True when `task` is the current one and succeeded; a superseded or cancelled task is dropped."""
        if task is not self.task:
            return False
        self.task = None
        self.busy_changed.emit(False)
        if task.isCanceled():
            self.status.emit("Cancelled.")
            return False
        if task.error is not None:
            message = str(task.error) or type(task.error).__name__
            self.status.emit(f"GAIR: {message}")
            QgsMessageLog.logMessage(message, "GAIR", Qgis.Warning)
            return False
        return True

    def _search_done(self, task: EngineTask) -> None:
        if not self._finish_task(task):
            return
        raster_path, points_path = task.result
        self._remove_results()
        similarity = QgsRasterLayer(raster_path, SIMILARITY_NAME, "gdal")
        vmin, vmax = band_range(similarity)
        similarity_renderer(similarity, vmin, vmax, self.threshold)
        add_to_gair_group(similarity, self.project, 0)
        points = None
        if points_path:  # None when no pixel peaks (e.g. the raster is all nodata but the references)
            points = QgsVectorLayer(points_path, TOP_K_NAME, "ogr")
            top_k_renderer(points)
            add_to_gair_group(points, self.project, 0)
        self.similarity_layer, self.points_layer = similarity, points
        self.status.emit(f"Similarity to {len(self.references)} reference point(s): "
                         f"{points.featureCount() if points else 0} top places.")
        self.result_ready.emit()

    def _embed_done(self, task: EngineTask) -> None:
        if not self._finish_task(task):
            return
        layer = QgsRasterLayer(str(task.result), "GAIR embedding (visible extent)", "gdal")
        add_to_gair_group(layer, self.project, 0)
        self.set_embedding_layer(layer)
        self.status.emit("Embedded the visible extent; click the map to search it.")
        self.embedding_ready.emit(layer)

    # --- clean-up -------------------------------------------------------------------------------------------
    def _remove_results(self) -> None:
        for layer in (self.similarity_layer, self.points_layer):
            if layer is not None and self.project.mapLayer(layer.id()) is not None:
                self.project.removeMapLayer(layer.id())
        self.similarity_layer = self.points_layer = None

    def clear(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
            self.busy_changed.emit(False)
        self.references = []
        self.markers.reset(QgsWkbTypes.PointGeometry)
        self._remove_results()
        self.status.emit("Cleared.")

    def shutdown(self) -> None:
        self.clear()
        self.canvas.scene().removeItem(self.markers)
        shutil.rmtree(self.workdir, ignore_errors=True)
