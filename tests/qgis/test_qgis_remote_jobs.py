"""The plugin's remote engine: a job through a real `python -m engine serve` gives the same bytes as a local run, its
files land (atomically) where the user asked, and a wrong token or an unreachable server is one clear line."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from engine.analysis import similarity_search
from engine.analysis.synthetic import make_planted_raster
from engine.io.files import pca_sidecar_path
from engine.params import OPERATIONS
from gair_qgis.engine_jobs import EngineFailure
from gair_qgis.remote_jobs import RemoteRequest, run_remote_job

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "plugin-test-token-0123456789"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`python -m engine serve` on 127.0.0.1 (a free port), as a user starts it: (url, its job folder)."""
    workdir = tmp_path_factory.mktemp("serve")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", "0", "--token", TOKEN,
                                "--workdir", str(workdir)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True, env=env, cwd=workdir)
    try:
        line = process.stderr.readline()
        match = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
        assert match, f"engine serve said: {line!r}"
        yield match.group(1), workdir
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_planted_raster(tmp_path_factory.mktemp("emb") / "emb.tif")


def test_a_remote_job_gives_the_local_bytes_at_the_paths_asked_for(served, planted, tmp_path):
    url, workdir = served
    point = planted.transform * (planted.targets[0][1] + 0.5, planted.targets[0][0] + 0.5)
    local = similarity_search(planted.path, tmp_path / "local.tif", points=[point], top_k=3,
                              hits_path=tmp_path / "local.gpkg")
    out = tmp_path / "not yet" / "my sim.tif"  # a folder to make, a name the server would refuse as it is
    out.parent.mkdir()
    stale = Path(str(out) + ".aux.xml")
    stale.write_text("<PAMDataset>of an older my sim.tif</PAMDataset>")
    messages = []
    result = run_remote_job((url, TOKEN), "similarity_search",
                            {"raster_path": str(planted.path), "out_path": str(out), "points": [list(point)],
                             "top_k": 3, "hits_path": str(tmp_path / "hits.gpkg"), "backend": "torch"},
                            on_message=messages.append)
    assert result["path"] == str(out)
    assert out.read_bytes() == Path(local.path).read_bytes()
    assert (tmp_path / "hits.gpkg").is_file() and not stale.exists()  # a stale sidecar would describe the old file
    assert any(m["type"] == "progress" for m in messages)
    assert any("uses its own model" in m.get("message", "") for m in messages)
    assert sorted(p.name for p in out.parent.iterdir()) == ["my sim.tif"]  # no .part file left
    assert list(workdir.iterdir()) == []  # the server removed the job's folder


def test_a_wrong_token_is_a_clear_error(served, planted, tmp_path):
    url, _ = served
    with pytest.raises(EngineFailure, match=f"^the remote engine at {url} refused the token: copy the token") as e:
        run_remote_job((url, "wrong-token-0123456789"), "similarity_search",
                       {"raster_path": str(planted.path), "out_path": str(tmp_path / "s.tif"), "points": [[0, 0]]})
    assert e.value.kind == "user" and not (tmp_path / "s.tif").exists()
    with pytest.raises(EngineFailure, match="refused the token"):
        run_remote_job((url, ""), "describe_engine", {})


def test_describe_engine_names_the_server(served):
    url, _ = served
    info = run_remote_job((url, TOKEN), "describe_engine", {})
    assert info["url"] == url and info["protocol"] == 1 and info["device"] == "cpu"
    assert info["engine"] == __import__("engine").__version__


def test_engine_errors_and_an_unreachable_server(served, tmp_path):
    url, _ = served
    with pytest.raises(EngineFailure, match="missing.tif") as e:  # the engine's GAIRError line, as it is
        run_remote_job((url, TOKEN), "similarity_search", {"raster_path": str(tmp_path / "missing.tif"),
                                                           "out_path": str(tmp_path / "s.tif"), "points": [[0, 0]]})
    assert e.value.kind == "user"
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(EngineFailure, match=rf"^cannot reach the remote engine at http://127.0.0.1:{port} .*check "
                                            "the engine URL in GAIR settings") as e:
        run_remote_job((f"http://127.0.0.1:{port}", TOKEN), "describe_engine", {})
    assert e.value.kind == "start"


def test_requests_name_files_plainly_and_carry_sidecars(tmp_path):
    raster = tmp_path / "a" / "emb.tif"
    raster.parent.mkdir()
    raster.write_bytes(b"r")
    pca_sidecar_path(raster).write_bytes(b"p")
    request = RemoteRequest.build("similarity_search", {
        "raster_path": str(raster), "out_path": str(tmp_path / "b" / "emb.tif"), "points": [[1, 2]],
        "hits_path": str(tmp_path / "emb.tif"), "model": "/somewhere/model.pth"})
    assert request.params == {"raster_path": {"file": "emb.tif"}, "out_path": {"file": "2-emb.tif"},
                              "points": [[1, 2]], "hits_path": {"file": "3-emb.tif"}}  # the model is the server's
    assert request.uploads == {"emb.tif": str(raster), "emb.pca.npz": str(pca_sidecar_path(raster))}
    assert request.targets["2-emb.tif"] == str(tmp_path / "b" / "emb.tif")
    assert request.targets["2-emb.pca.npz"] == str(tmp_path / "b" / "emb.pca.npz")
    assert request.targets["3-emb.tif-wal"] == str(tmp_path / "emb.tif-wal")
    op, param = next((op, p) for op in OPERATIONS.values() for p in op.params if p.kind == "folder_out")
    with pytest.raises(EngineFailure, match="writes the folder .* clear the engine URL in GAIR settings"):
        RemoteRequest.build(op.id, {param.name: str(tmp_path / "out")})


@pytest.mark.parametrize("name", ["emb.tif", "my emb.v2.tif", "noext"])
def test_raster_companions_are_the_engine_s_output_files(tmp_path, name):
    from engine.io.files import output_files
    from gair_qgis.remote_jobs import companions

    path = str(tmp_path / name)
    assert companions(path, "raster_out") == [str(p) for p in output_files(path, existing_only=False)]


def test_jobs_go_to_the_engine_url_in_the_settings(served, planted, tmp_path, qgis_app):
    """run_job, which every GAIR algorithm calls, sends the job to the remote engine the settings name."""
    from qgis.core import QgsSettings

    from gair_qgis import engine_jobs

    url, _ = served
    settings = QgsSettings()
    old = {key: settings.value(key, "", type=str) for key in (engine_jobs.URL_KEY, engine_jobs.TOKEN_KEY)}
    settings.setValue(engine_jobs.URL_KEY, url)
    settings.setValue(engine_jobs.TOKEN_KEY, TOKEN)
    try:
        progress = []
        result = engine_jobs.run_job("similarity_search", {"raster_path": str(planted.path),
                                                           "out_path": str(tmp_path / "sim.tif"),
                                                           "points": [[500100.0, 4100500.0]], "top_k": 2},
                                     progress=lambda fraction, message: progress.append(fraction))
        assert result["path"] == str(tmp_path / "sim.tif") and (tmp_path / "sim.tif").is_file()
        assert progress and progress[-1] == 1.0
    finally:
        for key, value in old.items():
            settings.setValue(key, value)


def test_qgis_python_needs_only_the_standard_library_for_set_up_and_remote_jobs():
    """QGIS's own Python (no torch, rasterio or scikit-learn) imports these plugin modules and nothing heavy."""
    python = "/usr/bin/python3"  # Debian's QGIS Python: always there where these tests run (make test installs it)
    assert os.path.isfile(python), f"{python} is missing: run `make test` (it installs QGIS from Debian)"
    code = ("import sys, gair_qgis.engine_setup, gair_qgis.remote_jobs; "
            "heavy = sorted({'numpy', 'torch', 'rasterio', 'sklearn', 'onnxruntime'} & set(sys.modules)); "
            "print(heavy)")
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_describe_model_is_the_server_s_own_model(tiny_bundle, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", "0", "--token", TOKEN,
                                "--workdir", str(tmp_path), "--model", str(tiny_bundle)], stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True, env=env, cwd=tmp_path)
    try:
        url = re.search(r"serving on (http://127\.0\.0\.1:\d+)", process.stderr.readline()).group(1)
        info = run_remote_job((url, TOKEN), "describe_model", {"model": "/elsewhere/ignored.pth"})
        assert info["remote"] == url and info["source"] == str(tiny_bundle) and info["dims"] == 32
        from engine.service.client import RemoteEngine, RemoteError

        with pytest.raises(RemoteError, match="HTTP 400: a remote engine answers describe_engine and describe_model"):
            RemoteEngine(url, TOKEN).run("fetch_official_checkpoint", {}, {}, tmp_path / "out")
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stderr.close()
