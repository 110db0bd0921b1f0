"""What the map tool does with clicks, free of widgets so tests can drive it: reference points in, a similarity
layer and top-k points out, computed in a QgsTask off the GUI thread and placed in the "GAIR" group.

Results are written to a temporary folder first. "Keep results" copies the current ones beside the project file (or
into a chosen folder) and repoints their layers; on shutdown every layer still reading the temporary folder leaves the
project before the folder is deleted, so a saved project never references files that are gone."""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

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
from .results import copy_with_sidecars, empty_element, free_path, provider_options, remove_layer_tree_entries

SIMILARITY_NAME = "{name} similarity"  # layers are named after the embedding raster and what they show
TOP_K_NAME = "{name} top places"
INSTRUCTION = ("Pick an embedding raster, then click the map to find places like the clicked one (shift-click adds "
               "more references). For a Sentinel-2 raster, embed the visible extent first.")
READY = "Click the map on {name} to find places like the clicked one; shift-click adds more references."


class EngineTask(QgsTask):
    """Runs `work(progress, cancel, log)` in a worker thread (the job itself runs in the engine process);
    `done(task)` is called on the GUI thread. The engine's log lines of the job (size estimate, "crop i/n, ~m:ss
    left") arrive through the `message` signal."""

    message = pyqtSignal(str)

    def __init__(self, description: str, work, done) -> None:
        super().__init__(description, QgsTask.CanCancel)
        self.work, self.done = work, done
        self.result, self.error = None, None

    def run(self) -> bool:
        try:
            self.result = self.work(lambda f, _message="": self.setProgress(100.0 * f), self.isCanceled,
                                    lambda _level, text: self.message.emit(text))
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
    progress = pyqtSignal(float)  # percent of the running task
    result_ready = pyqtSignal()
    results_changed = pyqtSignal(bool)  # whether there is a result to keep
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
        self.result_paths: tuple[str, str | None] | None = None
        self.task: EngineTask | None = None
        self.workdir = tempfile.mkdtemp(prefix="gair_maptool_")
        self.project.writeProject.connect(self._leave_out_temporary_layers)
        self.project.writeMapLayer.connect(self._leave_out_layer_element)
        self.project.layersWillBeRemoved.connect(self._forget_layers)
        self.markers = QgsRubberBand(canvas, QgsWkbTypes.PointGeometry)
        self.markers.setColor(QColor("#ff00ff"))
        self.markers.setIconSize(12)
        self.markers.setIcon(QgsRubberBand.ICON_X)
        self.markers.setWidth(3)

    # --- inputs ---------------------------------------------------------------------------------------------
    def set_embedding_layer(self, layer: QgsRasterLayer | None) -> None:
        if layer is not self.embedding_layer:
            self.clear(quiet=True)
        self.embedding_layer = layer
        self.status.emit(READY.format(name=layer.name()) if layer is not None else INSTRUCTION)

    def handle_click(self, point: QgsPointXY, additive: bool) -> None:
        """`point` is in the canvas CRS; shift-click (additive) adds a reference, a plain click replaces them."""
        if self.embedding_layer is None:
            self.status.emit(INSTRUCTION)
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

        def work(progress, cancel, log):
            return run_similarity(path, points, crs_wkt, stem + ".tif", stem + ".gpkg", top_k, progress, cancel, log)

        self._start(EngineTask("GAIR similarity search", work, self._search_done))

    def embed_visible_extent(self, source: QgsRasterLayer, model_path: str | None = None) -> None:
        """Embed what the canvas shows of `source` (the engine's default dims: DEFAULT_DIMS principal components,
        fewer dims of a smaller model all kept); the result becomes the embedding raster."""
        from ..engine_calls import run_embed_raster
        from ..settings import model_problem

        problem = model_problem(model_path)  # on the GUI thread: may ask before downloading the checkpoint
        if problem:
            self.status.emit(problem)
            return
        extent = QgsCoordinateTransform(self.canvas.mapSettings().destinationCrs(), source.crs(),
                                        self.project).transformBoundingBox(self.canvas.extent())
        extent = extent.intersect(source.extent())
        if extent.isEmpty():
            self.status.emit("The source raster is not in view; zoom to it first.")
            return
        path = source.source().split("|")[0]
        bounds = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
        out = os.path.join(self.workdir, f"embedding_{uuid.uuid4().hex[:8]}.tif")

        def work(progress, cancel, log):
            return run_embed_raster(path, out, extent=bounds, model=model_path, progress=progress, cancel=cancel,
                                    log=log)

        self._start(EngineTask("GAIR embed visible extent", work, self._embed_done))

    def _start(self, task: EngineTask) -> None:
        self.task = task
        task.message.connect(self.status)
        task.progressChanged.connect(self.progress)
        self.busy_changed.emit(True)
        self.progress.emit(0.0)
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
        name = self.embedding_layer.name() if self.embedding_layer is not None else "GAIR"
        similarity = QgsRasterLayer(raster_path, SIMILARITY_NAME.format(name=name), "gdal")
        vmin, vmax = band_range(similarity)
        similarity_renderer(similarity, vmin, vmax, self.threshold)
        add_to_gair_group(similarity, self.project, 0)
        points = None
        if points_path:  # None when no pixel peaks (e.g. the raster is all nodata but the references)
            points = QgsVectorLayer(points_path, TOP_K_NAME.format(name=name), "ogr")
            top_k_renderer(points)
            add_to_gair_group(points, self.project, 0)
        self.similarity_layer, self.points_layer = similarity, points
        self.result_paths = (raster_path, points_path)
        self.status.emit(f"Similarity to {len(self.references)} reference point(s): "
                         f"{points.featureCount() if points else 0} top places (the reference's own "
                         "neighbourhood left out). Temporary until you keep them.")
        self.result_ready.emit()
        self.results_changed.emit(True)

    def _embed_done(self, task: EngineTask) -> None:
        if not self._finish_task(task):
            return
        layer = QgsRasterLayer(str(task.result), "GAIR embedding (visible extent)", "gdal")
        add_to_gair_group(layer, self.project, 0)
        self.set_embedding_layer(layer)
        self.status.emit("Embedded the visible extent; click the map to search it.")
        self.embedding_ready.emit(layer)

    # --- keeping results ------------------------------------------------------------------------------------
    def default_keep_folder(self) -> str | None:
        """The project file's folder; None while the project is unsaved (then the user picks one)."""
        return self.project.absolutePath() or None

    def keep_results(self, folder: str) -> list[str]:
        """Copy the current similarity GeoTIFF and top-places GeoPackage into `folder` under names of their own,
        and repoint their layers there; returns the new paths. The next click starts new temporary results."""
        if self.result_paths is None:
            self.status.emit("Nothing to keep yet: click the map first.")
            return []
        os.makedirs(folder, exist_ok=True)
        kept = []
        embedding = self.embedding_layer
        if embedding is not None and embedding in self.temporary_layers():  # embedded here: keep it too
            target = free_path(folder, "gair_embedding", ".tif")
            copy_with_sidecars(embedding.source().split("|")[0], target)  # with its .pca.npz and quicklook
            embedding.setDataSource(target, embedding.name(), "gdal", provider_options())
            kept.append(target)
        stem = Path(embedding.source().split("|")[0]).stem if embedding is not None else "gair"
        for layer, path, suffix in ((self.similarity_layer, self.result_paths[0], "similarity"),
                                    (self.points_layer, self.result_paths[1], "top_places")):
            if path is None:
                continue
            target = free_path(folder, f"{stem}_{suffix}", Path(path).suffix)
            copy_with_sidecars(path, target)
            if layer is not None and self.project.mapLayer(layer.id()) is not None:
                source = target if layer is self.similarity_layer else f"{target}|layername=similar_places"
                layer.setDataSource(source, Path(target).stem, layer.providerType(), provider_options())
            kept.append(target)
        self.similarity_layer = self.points_layer = self.result_paths = None
        self.results_changed.emit(False)
        self.status.emit(f"Kept {len(kept)} file(s) in {folder}; the project now reads them from there.")
        return kept

    def temporary_layers(self) -> list:
        """Project layers reading files in this session's temporary folder."""
        root = os.path.realpath(self.workdir) + os.sep
        return [layer for layer in self.project.mapLayers().values()
                if os.path.realpath(layer.source().split("|")[0]).startswith(root)]

    def _leave_out_temporary_layers(self, document) -> None:
        """Writing the project file: layers of the temporary folder are left out of it, because their files go
        when the session ends. They stay on the map until then."""
        ids = {layer.id() for layer in self.temporary_layers()}
        if ids:
            remove_layer_tree_entries(document, ids)
            self.status.emit(f"The project was saved without {len(ids)} temporary GAIR layer(s): click Keep results "
                             "to store them beside the project, then save again.")

    def _leave_out_layer_element(self, layer, element, document) -> None:
        if layer in self.temporary_layers():
            empty_element(element)

    def _forget_layers(self, layer_ids) -> None:
        """Layers leaving the project (removed by the user, or a project being closed) are dropped from the state
        first, so nothing here removes them a second time while QGIS is removing them."""
        ids = set(layer_ids)
        if self.similarity_layer is not None and self.similarity_layer.id() in ids:
            self.similarity_layer = None
        if self.points_layer is not None and self.points_layer.id() in ids:
            self.points_layer = None
        if self.similarity_layer is None and self.points_layer is None and self.result_paths is not None:
            self.result_paths = None
            self.results_changed.emit(False)
        if self.embedding_layer is not None and self.embedding_layer.id() in ids:
            self.embedding_layer = None
            self.references = []
            self.markers.reset(QgsWkbTypes.PointGeometry)

    # --- clean-up -------------------------------------------------------------------------------------------
    def _remove_results(self) -> None:
        for layer in (self.similarity_layer, self.points_layer):
            if layer is not None and self.project.mapLayer(layer.id()) is not None:
                self.project.removeMapLayer(layer.id())
        had_results = self.result_paths is not None
        self.similarity_layer = self.points_layer = self.result_paths = None
        if had_results:
            self.results_changed.emit(False)

    def clear(self, quiet: bool = False) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
            self.busy_changed.emit(False)
        had = bool(self.references) or self.similarity_layer is not None
        self.references = []
        self.markers.reset(QgsWkbTypes.PointGeometry)
        self._remove_results()
        if had and not quiet:
            self.status.emit("Cleared. " + (READY.format(name=self.embedding_layer.name())
                                            if self.embedding_layer is not None else INSTRUCTION))

    def shutdown(self) -> None:
        """Unkept temporary layers leave the project before their folder is deleted."""
        self.clear(quiet=True)
        for signal, slot in ((self.project.writeProject, self._leave_out_temporary_layers),
                             (self.project.writeMapLayer, self._leave_out_layer_element),
                             (self.project.layersWillBeRemoved, self._forget_layers)):
            try:
                signal.disconnect(slot)
            except TypeError:  # shut down before
                pass
        for layer in self.temporary_layers():
            self.project.removeMapLayer(layer.id())
        if self.embedding_layer is not None and self.project.mapLayer(self.embedding_layer.id()) is None:
            self.embedding_layer = None
        if self.markers.scene() is not None:
            self.canvas.scene().removeItem(self.markers)
        shutil.rmtree(self.workdir, ignore_errors=True)
