"""LocalEngine, the plugin's client of a worker process: results, progress, cancel, a killed worker, a bad Python."""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio

from engine.analysis import similarity_search
from engine.analysis.synthetic import make_planted_raster
from engine.service.local import EngineFailure, LocalEngine

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def engine_process():
    engine = LocalEngine(sys.executable, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    yield engine
    engine.stop()


def similarity_params(raster, out: Path, **more) -> dict:
    return {"raster_path": str(raster.path), "out_path": str(out),
            "points": [list(raster.transform * (raster.targets[0][1] + 0.5, raster.targets[0][0] + 0.5))], **more}


def test_a_job_gives_the_direct_result_and_streams_progress(engine_process, tmp_path: Path) -> None:
    planted = make_planted_raster(tmp_path / "emb.tif")
    seen: list[dict] = []
    result = engine_process.run("similarity_search", similarity_params(planted, tmp_path / "via.tif", top_k=3),
                                on_message=seen.append)
    direct = similarity_search(planted.path, tmp_path / "direct.tif", points=similarity_params(
        planted, tmp_path / "x")["points"], top_k=3)
    assert result["path"] == str(tmp_path / "via.tif")
    with rasterio.open(direct.path) as a, rasterio.open(result["path"]) as b:
        np.testing.assert_array_equal(a.read(), b.read())
    fractions = [m["fraction"] for m in seen if m["type"] == "progress"]
    assert fractions and fractions[-1] == 1.0
    assert engine_process.hello["engine"] and engine_process.hello["device"] == "cpu"


def test_user_errors_raise_with_the_engine_line(engine_process, tmp_path: Path) -> None:
    with pytest.raises(EngineFailure, match="missing.tif") as caught:
        engine_process.run("similarity_search", {"raster_path": str(tmp_path / "missing.tif"),
                                                 "out_path": str(tmp_path / "o.tif"), "points": [[0, 0]]})
    assert caught.value.kind == "user"
    assert engine_process.run("describe_engine", {})["engine"]  # the worker keeps serving


def test_cancel_stops_promptly_and_leaves_no_output(engine_process, tmp_path: Path) -> None:
    planted = make_planted_raster(tmp_path / "big.tif", height=1024, width=1024, dims=64, tile=256)
    out = tmp_path / "sim.tif"
    progressed = threading.Event()
    with pytest.raises(EngineFailure) as caught:
        engine_process.run("similarity_search", similarity_params(planted, out, block_size=64),
                           on_message=lambda m: m["type"] == "progress" and progressed.set(),
                           cancel=progressed.is_set)
    assert caught.value.kind == "cancelled"
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert engine_process.alive  # a cancel does not cost the warm worker


def test_a_killed_worker_is_a_clear_error_and_the_next_job_starts_a_new_one(engine_process, tmp_path: Path) -> None:
    planted = make_planted_raster(tmp_path / "big.tif", height=1024, width=1024, dims=64, tile=256)
    out = tmp_path / "sim.tif"

    def kill_on_progress(message: dict) -> None:
        if message["type"] == "progress" and engine_process.alive:
            os.kill(engine_process._process.pid, signal.SIGKILL)

    with pytest.raises(EngineFailure, match="stopped during similarity_search .*signal 9.*next job starts") as caught:
        engine_process.run("similarity_search", similarity_params(planted, out, block_size=64),
                           on_message=kill_on_progress)
    assert caught.value.kind == "died" and not out.exists()
    again = engine_process.run("similarity_search", similarity_params(planted, out, block_size=256))
    assert Path(again["path"]).exists()


def test_a_missing_engine_python_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(EngineFailure, match="does not exist; set it up with GAIR > Set up engine") as caught:
        LocalEngine(str(tmp_path / "nope" / "python")).run("describe_engine", {})
    assert caught.value.kind == "start"


def test_a_python_without_the_engine_fails_at_start_with_its_message(tmp_path: Path) -> None:
    engine = LocalEngine(sys.executable, env={**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONNOUSERSITE": "1"})
    engine.python = "/usr/bin/python3"  # Debian's Python: no engine installed there
    with pytest.raises(EngineFailure, match="stopped at start: .*No module named engine") as caught:
        engine.start()
    assert caught.value.kind == "start"
