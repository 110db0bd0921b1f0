"""The map tool's engine jobs: the few-shot search (coarse, full or a view's detail) and the model consent asked on
the GUI thread before an embedding task starts. The work runs in the engine process (engine_jobs.run_job)."""
from __future__ import annotations

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from ..engine_jobs import Log, Progress, run_job
from ..engine_link import engine_attrs

# whole at full resolution up to FULL_PIXELS; above, coarse first (COARSE_PIXELS), then the view (engine.params.fewshot)
FULL_PIXELS, COARSE_PIXELS = engine_attrs("params", "MAPTOOL_FULL_PIXELS", "MAPTOOL_COARSE_PIXELS")


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


def run_fewshot(embedding_path: str, positives, negatives, points_crs: str | None, out_raster: str,
                out_points: str | None, top_k: int, *, max_pixels: int | None = None, extent=None,
                progress: Progress | None = None, cancel=None, log: Log | None = None) -> dict:
    """engine fewshot_search -> its result (path, hits_path, factor, window, width, height, ...)."""
    params = {"raster_path": embedding_path, "out_path": out_raster, "positives": [list(p) for p in positives],
              "negatives": [list(p) for p in negatives] or None, "points_crs": points_crs, "top_k": int(top_k),
              "hits_path": out_points if top_k > 0 else None, "max_pixels": max_pixels,
              "extent": list(extent) if extent is not None else None}
    return run_job("fewshot_search", {k: v for k, v in params.items() if v is not None}, progress, log, cancel)


def ask_model_consent(model_path: str | None) -> None:
    """On the GUI thread, before an embedding task: when the model is the official checkpoint and it is not
    downloaded, ask (naming its size) now, where a dialog can show. The download itself stays in the task: the
    `fetch_official_checkpoint` step is deferred (the task's ensure_official_checkpoint finds the consent given).
    Raises RuntimeError (the line to show) when the user declines or the engine cannot tell."""
    from ..settings import ensure_official_checkpoint, model_params

    def run_small_jobs(op: str, values: dict) -> dict:
        if op == "fetch_official_checkpoint":
            return {}  # the download runs in the task, not on the GUI thread
        return run_job(op, values)

    ensure_official_checkpoint(model_params(model_path), run_small_jobs)


def has_operation(op: str) -> bool:
    """Whether the engine offers `op` (the searches by photo and by location come with the engine's version)."""
    from ..engine_link import engine_module

    return op in engine_module("params").OPERATIONS


def run_query_search(op: str, embedding_path: str, query: dict, out_raster: str, out_points: str | None, top_k: int,
                     progress: Progress | None = None, cancel=None, log: Log | None = None) -> dict:
    """engine search_by_photo / search_by_location with the model of the GAIR settings (the raster's own model:
    the engine refuses another); the official checkpoint is fetched here when the consent was given up front."""
    from ..settings import ensure_official_checkpoint, model_params

    params = {"raster_path": embedding_path, "out_path": out_raster, "top_k": int(top_k),
              "hits_path": out_points if top_k > 0 else None, **query, **model_params(None)}
    ensure_official_checkpoint(params, lambda name, values: run_job(name, values, progress, log, cancel))
    return run_job(op, {k: v for k, v in params.items() if v is not None}, progress, log, cancel)
