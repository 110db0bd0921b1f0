"""The engine worker process: protocol lines in and out, results equal to a direct call, cancel, errors, warm model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from engine.analysis import similarity_search
from engine.analysis.synthetic import make_planted_raster
from engine.service import protocol
from engine.service.jobs import JobRunner

ROOT = Path(__file__).resolve().parents[1]


class WorkerProcess:
    """A real `engine.service.worker` child, driven as the plugin drives it."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", "from engine.service.worker import main; main()"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, cwd=ROOT)
        self.hello = self.read()

    def send(self, message: dict) -> None:
        self.proc.stdin.write(protocol.encode(message))
        self.proc.stdin.flush()

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, f"worker closed its output; stderr: {self.proc.stderr.read().decode()[-2000:]}"
        return protocol.decode(line, protocol.ENGINE_TYPES)

    def until_done(self, job: str) -> tuple[dict, list[dict]]:
        seen = []
        while True:
            message = self.read()
            seen.append(message)
            if message.get("job") == job and message["type"] in ("result", "error"):
                return message, seen

    def close(self) -> int:
        self.send({"type": "shutdown"})
        self.proc.stdin.close()
        code = self.proc.wait(timeout=60)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code


@pytest.fixture
def worker():
    process = WorkerProcess()
    yield process
    if process.proc.poll() is None:
        process.close()


def test_hello_names_versions_and_device(worker) -> None:
    hello = worker.hello
    assert hello["type"] == "hello" and hello["protocol"] == protocol.PROTOCOL_VERSION
    assert hello["device"] == "cpu" and hello["torch"] and hello["python"] == sys.version.split()[0]


def test_similarity_job_matches_a_direct_call_and_streams_progress(worker, tmp_path: Path) -> None:
    planted = make_planted_raster(tmp_path / "emb.tif")
    point = [planted.transform * (planted.targets[0][1] + 0.5, planted.targets[0][0] + 0.5)]
    direct = similarity_search(planted.path, tmp_path / "direct.tif", points=point, top_k=3)
    worker.send({"type": "run", "job": "j1", "op": "similarity_search",
                 "params": {"raster_path": str(planted.path), "out_path": str(tmp_path / "via.tif"),
                            "points": [list(p) for p in point], "top_k": 3}})
    final, seen = worker.until_done("j1")
    assert final["type"] == "result", final
    assert final["result"]["path"] == str(tmp_path / "via.tif")
    fractions = [m["fraction"] for m in seen if m["type"] == "progress"]
    assert fractions and fractions == sorted(fractions) and fractions[-1] == 1.0
    with rasterio.open(direct.path) as a, rasterio.open(tmp_path / "via.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_user_errors_are_one_line_and_the_worker_keeps_serving(worker, tmp_path: Path) -> None:
    worker.send({"type": "run", "job": "bad", "op": "similarity_search",
                 "params": {"raster_path": str(tmp_path / "missing.tif"), "out_path": str(tmp_path / "o.tif"),
                            "points": [[0, 0]]}})
    final, _ = worker.until_done("bad")
    assert final["type"] == "error" and final["kind"] == "user" and "\n" not in final["message"]
    assert "missing.tif" in final["message"]
    worker.send({"type": "run", "job": "unknown", "op": "format_disk", "params": {}})
    final, _ = worker.until_done("unknown")
    assert final["kind"] == "user" and "unknown operation 'format_disk'" in final["message"]
    worker.send({"type": "run", "job": "typo", "op": "similarity_search",
                 "params": {"raster_path": "a.tif", "out_path": "b.tif", "top_kk": 3}})
    final, _ = worker.until_done("typo")
    assert final["kind"] == "user" and "no parameter top_kk" in final["message"]
    worker.send({"type": "run", "job": "range", "op": "similarity_search",
                 "params": {"raster_path": "a.tif", "out_path": "b.tif", "top_k": -1}})
    final, _ = worker.until_done("range")
    assert final["kind"] == "user" and "top_k must be at least 0" in final["message"]
    worker.proc.stdin.write(b"this is not json\n")
    worker.proc.stdin.flush()
    assert worker.read()["kind"] == "internal"
    worker.send({"type": "run", "job": "info", "op": "describe_engine", "params": {}})
    final, _ = worker.until_done("info")
    assert final["result"]["engine"] == worker.hello["engine"]
    assert worker.close() == 0


def test_cancel_stops_the_job_and_leaves_no_output(worker, tmp_path: Path) -> None:
    planted = make_planted_raster(tmp_path / "big.tif", height=1024, width=1024, dims=64, tile=256)
    out = tmp_path / "sim.tif"
    worker.send({"type": "run", "job": "long", "op": "similarity_search",
                 "params": {"raster_path": str(planted.path), "out_path": str(out), "points": [[500100.0, 4100500.0]],
                            "block_size": 64}})
    while worker.read()["type"] != "progress":
        pass
    worker.send({"type": "cancel", "job": "long"})
    final, _ = worker.until_done("long")
    assert final["type"] == "error" and final["kind"] == "cancelled"
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_runner_loads_a_model_once_per_settings(tmp_path: Path, monkeypatch) -> None:
    loads = []
    monkeypatch.setattr("engine.runtime.loading.load_model",
                        lambda path, device, backend: loads.append((path, device, backend)) or object())
    bundle = tmp_path / "model.onnx"
    bundle.write_bytes(b"x")
    runner = JobRunner()
    first = runner.model(str(bundle), "auto", "cpu")
    assert runner.model(str(bundle), "auto", "cpu") is first and len(loads) == 1
    runner.model(str(bundle), "onnx", "cpu")
    assert len(loads) == 2
    monkeypatch.setenv("GAIR_CHECKPOINT", str(bundle))  # no model named: GAIR_CHECKPOINT, never a download
    runner.model(None, "onnx", "cpu")
    assert loads[-1][0] == str(bundle) and len(loads) == 2


def test_messages_are_single_json_lines() -> None:
    line = protocol.encode(protocol.log("j", "info", "two\nlines"))
    assert line.count(b"\n") == 1 and json.loads(line)["message"] == "two\nlines"
    assert protocol.error("j", "user", "a\n  b")["message"] == "a b"
    with pytest.raises(protocol.ProtocolError, match="job"):
        protocol.decode(b'{"type": "run", "op": "x"}', protocol.CLIENT_TYPES)
    assert protocol.decode(protocol.encode({"type": "shutdown"}), protocol.CLIENT_TYPES) == {"type": "shutdown"}


def test_no_model_named_never_downloads_in_a_job(tmp_path: Path, monkeypatch) -> None:
    """Downloading the official checkpoint is its own job, asked for after the user's consent."""
    from engine.errors import GAIRError

    monkeypatch.delenv("GAIR_CHECKPOINT", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GAIRError, match="official checkpoint is not downloaded"):
        JobRunner().model(None, "auto", "cpu")
