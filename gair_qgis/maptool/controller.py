"""What the map tool does with clicks, free of widgets so tests can drive it: positive and negative examples in, a
few-shot score layer and top-k points out, computed by the engine worker from a QgsTask off the GUI thread and
placed in the "GAIR" group.

The score is the engine's mean-difference query (engine.analysis.fewshot): cosine to the positives' mean minus
cosine to the negatives' mean. A large raster gets a coarse heatmap of the whole raster first (every f-th pixel,
from its overviews), then the visible extent in detail, again after each zoom or pan (see jobs.FULL_PIXELS).
Results are temporary until kept (see results.KeptResults)."""
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
    QgsVectorLayer,
)
from qgis.gui import QgsMapCanvas
from qgis.PyQt.QtCore import QObject, QTimer, pyqtSignal

from ..engine_calls import defaults
from ..layers import add_to_gair_group
from ..styling import band_range, similarity_renderer, top_k_renderer
from . import jobs
from .examples import Examples
from .jobs import EngineTask
from .queries import ModalSearches
from .results import KeptResults

SIMILARITY_NAME = "{name} similarity"  # layers are named after the embedding raster and what they show
DETAIL_NAME = "{name} similarity (view detail)"
TOP_K_NAME = "{name} top places"
INSTRUCTION = ("Pick an embedding raster, then click the map to find places like the clicked one (each click adds a "
               "positive example; Ctrl-click or right-click a negative one). For a Sentinel-2 raster, embed the "
               "visible extent first.")
READY = ("Click the map on {name} to find places like the clicked one; more clicks add positive examples, "
         "Ctrl-click or right-click adds a negative one.")
REFINE_DELAY_MS = 300  # after a zoom or pan settles, the view is refined


class SimilarityController(KeptResults, ModalSearches, QObject):
    """State of one similarity session: embedding raster, reference points, threshold, result layers."""

    status = pyqtSignal(str)
    busy_changed = pyqtSignal(bool)
    progress = pyqtSignal(float)  # percent of the running task
    result_ready = pyqtSignal()
    heatmap_ready = pyqtSignal(str)  # "full" (whole raster, full resolution), "coarse", then "detail" (the view)
    examples_changed = pyqtSignal(int)  # number of clicked examples
    results_changed = pyqtSignal(bool)  # whether there is a result to keep
    embedding_ready = pyqtSignal(QgsRasterLayer)

    def __init__(self, canvas: QgsMapCanvas, project: QgsProject | None = None) -> None:
        super().__init__()
        self.canvas, self.project = canvas, project or QgsProject.instance()
        self.embedding_layer: QgsRasterLayer | None = None
        self.examples = Examples(canvas)
        self.top_k = defaults("fewshot_search")["top_k"]
        self.full_pixels, self.coarse_pixels = jobs.FULL_PIXELS, jobs.COARSE_PIXELS
        self.view_pixels: int | None = None  # most pixels of a view in detail; None: the canvas's (>= full_pixels)
        self.threshold: float | None = None
        self.similarity_layer: QgsRasterLayer | None = None  # the whole raster: full resolution or coarse
        self.detail_layer: QgsRasterLayer | None = None  # the view in detail, above a coarse one
        self.points_layer: QgsVectorLayer | None = None
        self.result_paths: tuple[str, str | None] | None = None
        self.coarse_factor = 1  # source pixels per pixel of similarity_layer
        self.detail_extent = None  # (QgsRectangle in the raster CRS, factor) of detail_layer
        self.task: EngineTask | None = None
        self.refine_pending = False
        self.location_mode = False  # the next click is a location query (search by location), not an example
        self.last_query: tuple[str, dict] | None = None  # the last search by photo or location (operation, query)
        self.refine_timer = QTimer(self)
        self.refine_timer.setSingleShot(True)
        self.refine_timer.setInterval(REFINE_DELAY_MS)
        self.refine_timer.timeout.connect(self.refine_view)
        canvas.extentsChanged.connect(self.refine_timer.start)
        self.workdir = tempfile.mkdtemp(prefix="gair_maptool_")
        self.project.writeProject.connect(self._leave_out_temporary_layers)
        self.project.writeMapLayer.connect(self._leave_out_layer_element)
        self.project.layersWillBeRemoved.connect(self._forget_layers)

    @property
    def references(self) -> list[QgsPointXY]:
        """The positive examples (in the embedding raster's CRS)."""
        return self.examples.positives

    @property
    def negatives(self) -> list[QgsPointXY]:
        return self.examples.negatives

    # --- inputs ---------------------------------------------------------------------------------------------
    def set_embedding_layer(self, layer: QgsRasterLayer | None) -> None:
        if layer is not self.embedding_layer:
            self.clear(quiet=True)
        self.embedding_layer = layer
        self.status.emit(READY.format(name=layer.name()) if layer is not None else INSTRUCTION)

    def handle_click(self, point: QgsPointXY, negative: bool = False) -> None:
        """`point` is in the canvas CRS: a positive example, or a negative one (Ctrl-click, right-click); the search
        runs again with every example so far."""
        if self.embedding_layer is None:
            self.status.emit(INSTRUCTION)
            return
        to_raster = QgsCoordinateTransform(self.canvas.mapSettings().destinationCrs(), self.embedding_layer.crs(),
                                           self.project)
        raster_point = to_raster.transform(point)
        if not self.embedding_layer.extent().contains(raster_point):
            self.status.emit("That point is outside the embedding raster; click inside it.")
            return
        if self.location_mode:
            self.search_by_location(raster_point)
            return
        self.examples.add(raster_point, point, positive=not negative)
        self.examples_changed.emit(len(self.examples.items))
        self.run_search()

    def undo(self) -> None:
        """Forget the last click and search again with the others (nothing left: the results go)."""
        if self.examples.undo() is None:
            return
        self.examples_changed.emit(len(self.examples.items))
        if self.references:
            self.run_search()
        else:
            self._cancel_task()
            self._remove_results()
            self.status.emit("Undone. " + ("Click a positive example (a plain click) to search."
                                           if self.negatives else READY.format(name=self.embedding_layer.name())))

    def save_examples(self, path: str, class_name: str = "") -> QgsVectorLayer | None:
        """Write the clicked examples as a GeoPackage point layer (`label` positive/negative, `class` for Train
        classifier) and add it to the GAIR group; None when there is nothing to save."""
        if not self.examples.items or self.embedding_layer is None:
            self.status.emit("No examples to save yet: click the map first.")
            return None
        try:
            self.examples.save(path, self.embedding_layer.crs(), class_name, self.project)
        except OSError as exc:
            self.status.emit(f"GAIR: {exc}")
            return None
        layer = QgsVectorLayer(f"{path}|layername=gair_examples", os.path.splitext(os.path.basename(path))[0], "ogr")
        add_to_gair_group(layer, self.project, 0)
        self.status.emit(f"Saved {len(self.examples.items)} example(s) to {path}: use it in Train classifier with "
                         "the class field 'class'.")
        return layer

    def set_threshold(self, value: float | None) -> None:
        """Hide similarities below `value` (a pure restyle, no recomputation)."""
        self.threshold = value
        if self.similarity_layer is not None:
            vmin, vmax = band_range(self.similarity_layer)
            for layer in (self.similarity_layer, self.detail_layer):
                if layer is not None:
                    similarity_renderer(layer, vmin, vmax, value)
                    layer.triggerRepaint()

    # --- work -----------------------------------------------------------------------------------------------
    def run_search(self) -> None:
        """Score the raster by the examples: whole at full resolution when small, else coarse first (then the view
        in detail, see refine_view). The newest click wins: a running search is cancelled."""
        if not self.references:
            self.status.emit("Click a positive example first (a plain click); negatives only say what to avoid.")
            return
        layer = self.embedding_layer
        coarse = layer.width() * layer.height() > self.full_pixels
        self._start_fewshot("coarse" if coarse else "full", self.coarse_pixels if coarse else None, None, self.top_k)

    def refine_view(self) -> None:
        """After a coarse heatmap (and after each zoom or pan): score the visible extent at up to the canvas's
        pixels (the screen shows no more), full resolution once zoomed in."""
        if self.similarity_layer is None or self.coarse_factor == 1 or not self.references:
            return
        if self.busy:
            self.refine_pending = True
            return
        self.refine_pending = False
        layer = self.embedding_layer
        extent = QgsCoordinateTransform(self.canvas.mapSettings().destinationCrs(), layer.crs(),
                                        self.project).transformBoundingBox(self.canvas.extent())
        extent = extent.intersect(layer.extent())
        if extent.isEmpty():
            return
        if self.detail_extent is not None and self.detail_extent[1] == 1 and self.detail_extent[0].contains(extent):
            return  # already in full detail
        bounds = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
        size = self.canvas.mapSettings().outputSize()
        pixels = self.view_pixels or max(self.full_pixels, size.width() * size.height())
        self._start_fewshot("detail", pixels, bounds, 0)

    def _start_fewshot(self, stage: str, max_pixels: int | None, extent, top_k: int) -> None:
        if self.task is not None:
            self.task.cancel()
        layer = self.embedding_layer
        path = layer.source().split("|")[0]
        crs_wkt = layer.crs().toWkt()
        positives = [(p.x(), p.y()) for p in self.references]
        negatives = [(p.x(), p.y()) for p in self.negatives]
        stem = os.path.join(self.workdir, f"{stage}_{uuid.uuid4().hex[:8]}")

        def work(progress, cancel, log):
            return jobs.run_fewshot(path, positives, negatives, crs_wkt, stem + ".tif",
                                    stem + ".gpkg" if top_k > 0 else None, top_k, max_pixels=max_pixels,
                                    extent=extent, progress=progress, cancel=cancel, log=log)

        title = {"full": "GAIR few-shot search", "coarse": "GAIR few-shot search (coarse)",
                 "detail": "GAIR few-shot search (view detail)"}[stage]
        self._start(EngineTask(title, work, lambda task: self._search_done(task, stage)))

    def embed_visible_extent(self, source: QgsRasterLayer, model_path: str | None = None) -> None:
        """Embed what the canvas shows of `source` (the engine's default dims: DEFAULT_DIMS principal components,
        fewer dims of a smaller model all kept); the result becomes the embedding raster."""
        from ..engine_calls import run_embed_raster
        from ..settings import model_problem

        problem = model_problem(model_path)
        if problem:
            self.status.emit(problem)
            return
        try:  # on the GUI thread, before the task: the official checkpoint's download is asked here
            jobs.ask_model_consent(model_path)
        except Exception as exc:  # declined, or the engine cannot tell (offline, no engine set up)
            self.status.emit(f"GAIR: {exc}")
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

    def _cancel_task(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
            self.busy_changed.emit(False)

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

    def _search_done(self, task: EngineTask, stage: str, query: str | None = None) -> None:
        if not self._finish_task(task):
            return
        result = task.result
        name = self.embedding_layer.name() if self.embedding_layer is not None else "GAIR"
        if stage == "detail":
            self._show_detail(result, name)
        else:
            self._show_whole(result, name, stage, query)
        self.result_ready.emit()
        self.heatmap_ready.emit(stage)
        self.results_changed.emit(True)
        if stage == "coarse" or self.refine_pending:
            self.refine_view()  # as the user waits: the view in detail

    def _show_whole(self, result: dict, name: str, stage: str, query: str | None = None) -> None:
        self._remove_results()
        raster_path, points_path = str(result["path"]), result.get("hits_path")
        similarity = QgsRasterLayer(raster_path, SIMILARITY_NAME.format(name=name), "gdal")
        vmin, vmax = band_range(similarity)
        similarity_renderer(similarity, vmin, vmax, self.threshold)
        add_to_gair_group(similarity, self.project, 0)
        points = None
        if points_path:  # None when no pixel peaks (e.g. the raster is all nodata but the references)
            points = QgsVectorLayer(str(points_path), TOP_K_NAME.format(name=name), "ogr")
            top_k_renderer(points)
            add_to_gair_group(points, self.project, 0)
        self.similarity_layer, self.points_layer = similarity, points
        self.result_paths = (raster_path, str(points_path) if points_path else None)
        self.coarse_factor = int(result.get("factor") or 1)
        examples = f"{len(self.references)} positive, {len(self.negatives)} negative example(s)" \
            if self.negatives else f"{len(self.references)} reference point(s)"
        examples = query or examples
        places = f"{points.featureCount() if points else 0} top places"
        if stage == "coarse":
            self.status.emit(f"Similarity to {examples}: a coarse first look (every {self.coarse_factor}th pixel); "
                             f"{places} of the whole raster. Refining the view…")
        else:
            self.status.emit(f"Similarity to {examples}: {places} (the examples' own neighbourhood left out). "
                             "Temporary until you keep them.")

    def _show_detail(self, result: dict, name: str) -> None:
        self._remove_layer(self.detail_layer)
        detail = QgsRasterLayer(str(result["path"]), DETAIL_NAME.format(name=name), "gdal")
        vmin, vmax = band_range(self.similarity_layer) if self.similarity_layer is not None else band_range(detail)
        similarity_renderer(detail, vmin, vmax, self.threshold)  # the coarse layer's colours: one map
        below_points = 1 if self.points_layer is not None else 0
        add_to_gair_group(detail, self.project, below_points)
        self.detail_layer = detail
        self.detail_extent = (detail.extent(), int(result.get("factor") or 1))
        grid = "full resolution" if self.detail_extent[1] == 1 else f"every {self.detail_extent[1]}th pixel"
        self.status.emit(f"The view in detail ({grid}); zoom or pan to refine another part. Top places: the "
                         f"whole raster's (within {self.coarse_factor} px). Temporary until you keep them.")

    def _embed_done(self, task: EngineTask) -> None:
        if not self._finish_task(task):
            return
        layer = QgsRasterLayer(str(task.result), "GAIR embedding (visible extent)", "gdal")
        add_to_gair_group(layer, self.project, 0)
        self.set_embedding_layer(layer)
        self.status.emit("Embedded the visible extent; click the map to search it.")
        self.embedding_ready.emit(layer)

    def _forget_layers(self, layer_ids) -> None:
        """Layers leaving the project (removed by the user, or a project being closed) are dropped from the state
        first, so nothing here removes them a second time while QGIS is removing them."""
        ids = set(layer_ids)
        if self.similarity_layer is not None and self.similarity_layer.id() in ids:
            self.similarity_layer = None
        if self.points_layer is not None and self.points_layer.id() in ids:
            self.points_layer = None
        if self.detail_layer is not None and self.detail_layer.id() in ids:
            self.detail_layer = self.detail_extent = None
        if self.similarity_layer is None and self.points_layer is None and self.result_paths is not None:
            self.result_paths = None
            self.results_changed.emit(False)
        if self.embedding_layer is not None and self.embedding_layer.id() in ids:
            self.embedding_layer = None
            self.examples.clear()
            self.examples_changed.emit(0)

    # --- clean-up -------------------------------------------------------------------------------------------
    def _remove_layer(self, layer) -> None:
        if layer is not None and self.project.mapLayer(layer.id()) is not None:
            self.project.removeMapLayer(layer.id())

    def _remove_results(self) -> None:
        for layer in (self.similarity_layer, self.detail_layer, self.points_layer):
            self._remove_layer(layer)
        had_results = self.result_paths is not None
        self.similarity_layer = self.points_layer = self.detail_layer = self.result_paths = None
        self.detail_extent, self.coarse_factor = None, 1
        if had_results:
            self.results_changed.emit(False)

    def clear(self, quiet: bool = False) -> None:
        self._cancel_task()
        had = bool(self.examples.items) or self.similarity_layer is not None
        self.examples.clear()
        self.examples_changed.emit(0)
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
        self.refine_timer.stop()
        try:
            self.canvas.extentsChanged.disconnect(self.refine_timer.start)
        except TypeError:  # shut down before
            pass
        self.examples.remove_markers()
        shutil.rmtree(self.workdir, ignore_errors=True)
