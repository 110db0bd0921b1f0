"""The engine worker process behind every algorithm: a worker killed mid-job (kill -9, as the out-of-memory killer
does) is one clear Processing error, leaves no output, and the next algorithm run starts a new worker."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import processing
import pytest
from qgis.core import QgsProcessingException, QgsProcessingFeedback


class KillWorkerAtFirstProgress(QgsProcessingFeedback):
    """Sends SIGKILL to the engine worker when the job first reports progress (the job is then mid-way)."""

    def __init__(self) -> None:
        super().__init__()
        self.killed: int | None = None
        self.progressChanged.connect(self._kill)

    def _kill(self, value: float) -> None:
        if value > 0 and self.killed is None:
            from gair_qgis.engine_jobs import shared_engine

            self.killed = shared_engine()._process.pid
            os.kill(self.killed, signal.SIGKILL)


def test_a_killed_worker_is_a_clear_error_and_the_next_job_runs(gair_provider, sample_raster, tmp_path):
    from gair_qgis.engine_jobs import shared_engine

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    feedback = KillWorkerAtFirstProgress()
    with pytest.raises(QgsProcessingException) as error:
        processing.run("gair:embed_raster", {"INPUT": str(sample_raster), "OUTPUT": str(out_dir / "killed.tif")},
                       feedback=feedback)
    assert feedback.killed is not None
    message = str(error.value)
    assert "engine process stopped during embed_raster (signal 9, probably out of memory)" in message
    assert "the next job starts a new engine" in message and "Traceback" not in message
    assert os.listdir(out_dir) == []  # no output, no temp file, no lock file of the killed job

    again = processing.run("gair:embed_raster", {"INPUT": str(sample_raster), "DIMS": 4,
                                                 "OUTPUT": str(out_dir / "again.tif")})
    assert Path(again["OUTPUT"]).is_file()
    assert shared_engine().alive and shared_engine()._process.pid != feedback.killed
