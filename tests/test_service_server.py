"""`engine serve`: token required, same bytes as a local run, nothing read or written outside a job's folder."""
from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import pytest

from engine import GAIRError
from engine.analysis import similarity_search
from engine.analysis.synthetic import make_planted_raster
from engine.service.client import RemoteEngine, RemoteError
from engine.service.server import make_server

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture
def server(tmp_path: Path):
    httpd, token = make_server("127.0.0.1", 0, TOKEN, workdir=tmp_path / "server")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", tmp_path / "server"
    httpd.shutdown()
    httpd.server_close()


def test_a_job_with_the_token_gives_the_same_bytes_as_a_local_run(server, tmp_path: Path) -> None:
    url, _ = server
    planted = make_planted_raster(tmp_path / "emb.tif")
    point = planted.transform * (planted.targets[0][1] + 0.5, planted.targets[0][0] + 0.5)
    local = similarity_search(planted.path, tmp_path / "local.tif", points=[point], top_k=3,
                              hits_path=tmp_path / "local.gpkg")
    progress = []
    final = RemoteEngine(url, TOKEN).run(
        "similarity_search",
        {"raster_path": {"file": "emb.tif"}, "out_path": {"file": "sim.tif"}, "points": [list(point)], "top_k": 3,
         "hits_path": {"file": "hits.gpkg"}},
        inputs={"emb.tif": planted.path}, out_dir=tmp_path / "remote", on_message=progress.append)
    assert final["type"] == "result", final
    assert final["result"]["path"] == str(tmp_path / "remote" / "sim.tif")
    assert (tmp_path / "remote" / "sim.tif").read_bytes() == local.path.read_bytes()
    assert (tmp_path / "remote" / "hits.gpkg").is_file()
    assert any(m["type"] == "progress" for m in progress)


@pytest.mark.parametrize("token", [None, "", "wrong-token-0123456789"])
def test_requests_without_the_right_token_are_refused(server, token) -> None:
    url, workdir = server
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    for method, path in (("GET", "/v1/hello"), ("POST", "/v1/jobs")):
        request = urllib.request.Request(url + path, method=method, headers=headers, data=b"" if method == "POST"
                                         else None)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == 401
    assert list(workdir.iterdir()) == []  # no job was created


def test_the_server_reads_and_writes_only_inside_the_job(server, tmp_path: Path) -> None:
    url, workdir = server
    outside = tmp_path / "secret.tif"
    make_planted_raster(outside)
    engine = RemoteEngine(url, TOKEN)
    with pytest.raises(RemoteError, match="names a file"):
        engine.run("similarity_search", {"raster_path": str(outside), "out_path": {"file": "o.tif"},
                                         "points": [[0, 0]]}, {}, tmp_path / "r")
    with pytest.raises(RemoteError, match="names a file"):
        engine.run("similarity_search", {"raster_path": {"file": "x.tif"}, "out_path": str(tmp_path / "stolen.tif"),
                                         "points": [[0, 0]]}, {}, tmp_path / "r")
    with pytest.raises(RemoteError, match="bad file name"):
        engine.run("similarity_search", {"raster_path": {"file": "../secret.tif"}, "out_path": {"file": "o.tif"},
                                         "points": [[0, 0]]}, {}, tmp_path / "r")
    with pytest.raises(RemoteError, match="own model"):
        engine.run("embed_raster", {"model": "/etc/passwd"}, {}, tmp_path / "r")
    with pytest.raises(RemoteError, match="names a file"):  # list-valued path parameters too
        engine.run("train_classifier", {"raster_path": {"file": "e.tif"}, "labels_path": {"file": "l.gpkg"},
                                        "class_field": "c", "model_path": {"file": "m"},
                                        "report_paths": ["/tmp/report.html"]}, {}, tmp_path / "r")
    job = json.loads(engine._request("POST", "/v1/jobs"))["job"]
    with pytest.raises(RemoteError, match="bad file name"):
        engine._request("PUT", f"/v1/jobs/{job}/files/..%2Fescape.tif", b"x", "application/octet-stream")
    assert not (tmp_path / "stolen.tif").exists() and not (workdir / "escape.tif").exists()
    assert sorted(p.name for p in workdir.iterdir()) == [job]  # finished jobs were removed with their folders


def test_user_errors_come_back_as_one_line(server, tmp_path: Path) -> None:
    url, _ = server
    final = RemoteEngine(url, TOKEN).run("similarity_search", {"raster_path": {"file": "none.tif"},
                                                               "out_path": {"file": "o.tif"}, "points": [[0, 0]]},
                                         {}, tmp_path / "r")
    assert final["type"] == "error" and final["kind"] == "user" and "none.tif" in final["message"]


def test_short_tokens_are_refused() -> None:
    with pytest.raises(GAIRError, match="too short"):
        make_server("127.0.0.1", 0, "short")
