"""Nothing a user owns is ever lost (issue 15, "Data loss"): an output may not be an input or another output, writing a
layer into a GeoPackage keeps its other layers, a bad output fails before any work, SIGTERM/Ctrl-C/SIGKILL leave no
output and no lasting temp file, and two runs cannot write the same output at once."""
from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import shapely
import torch

import engine
from engine.analysis.synthetic import labelled_points, make_planted_raster, pixel_xy
from engine.cli.main import main
from engine.errors import GAIRError
from engine.io.files import OutputLock, lock_file_path
from engine.io.guard import check_paths
from engine.io.vectors import META_TABLE, read_layer_metadata, write_gpkg
from engine.params import OPERATIONS
from engine.service.jobs import checked_params
from tests.cli_helpers import cli_fails

from .test_pipeline_raster import synthetic_s2, write_raster

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return engine.save_bundle(engine.GAIRModel(engine.GAIRConfig.tiny()), tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture
def planted(tmp_path):
    return make_planted_raster(tmp_path / "planted.tif", dims=8, noise=0.5, seed=2)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _labels(tmp_path: Path, planted) -> Path:
    rows, cols, labels = labelled_points(planted, 8, seed=1)
    xs, ys = pixel_xy(planted, rows, cols)
    return write_gpkg(tmp_path / "labels.gpkg", shapely.points(xs, ys),
                      {"label": np.array(["a", "b", "c", "d"], dtype=object)[labels]}, planted.crs)


# ---- 1. an output is never an input, nor another output ------------------------------------------------------------
def test_embed_raster_into_its_own_input_is_refused_also_through_links(tmp_path, capsys):
    s2 = write_raster(tmp_path / "s2.tif", synthetic_s2(96, 96, seed=3))
    before = _digest(s2)
    (tmp_path / "link.tif").symlink_to(s2)
    os.link(s2, tmp_path / "hard.tif")
    missing_model = tmp_path / "no-model"  # the check comes before the model loads: no "model not found" error
    for output in (s2, tmp_path / "link.tif", tmp_path / "hard.tif", tmp_path / "sub" / ".." / "s2.tif"):
        cli_fails(capsys, ["embed-raster", s2, output, "--model", missing_model], "is also the input", "overwrite",
               "choose another output name")
        assert _digest(s2) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.tif", "link.tif", "s2.tif"]


def test_train_classifier_model_output_onto_the_embedding_raster_is_refused(tmp_path, planted, capsys):
    labels = _labels(tmp_path, planted)
    before = _digest(planted.path)
    cli_fails(capsys, ["train-classifier", planted.path, labels, "--field", "label", "--model-output", planted.path,
                    "--folds", "2"], "--model-output", "is also the input raster")
    cli_fails(capsys, ["train-classifier", planted.path, labels, "--field", "label", "--model-output",
                    tmp_path / "m.joblib", "--report", labels, "--folds", "2"], "--report", "labels")
    assert _digest(planted.path) == before and not (tmp_path / "m.joblib").exists()


def test_two_outputs_of_one_run_with_the_same_name_are_refused(tmp_path, planted, capsys):
    labels = _labels(tmp_path, planted)
    model = tmp_path / "m.joblib"
    assert main(["train-classifier", str(planted.path), str(labels), "--field", "label", "--model-output",
                 str(model), "--folds", "2", "--quiet"]) == 0
    capsys.readouterr()
    (tmp_path / "x.tif").write_bytes(b"mine")
    cli_fails(capsys, ["apply-model", planted.path, model, tmp_path / "x.tif", "--confidence", tmp_path / "x.tif"],
           "--confidence", "are the same file", "give each output its own name")
    assert (tmp_path / "x.tif").read_bytes() == b"mine"
    with pytest.raises(GAIRError, match="same file"):  # Python callers are protected too
        engine.analysis.classify.apply_model(planted.path, model, tmp_path / "y.tif",
                                             confidence_path=tmp_path / "." / "y.tif")
    with pytest.raises(GAIRError, match="same file"):  # and the worker, before it loads anything
        checked_params(OPERATIONS["apply_model"], {"raster_path": str(planted.path), "model_path": str(model),
                                                   "out_path": "a.tif", "confidence_path": "./a.tif"})
    assert not (tmp_path / "y.tif").exists()


def test_an_output_whose_sidecar_would_replace_an_input_is_refused(tmp_path):
    picture = tmp_path / "scene.quicklook.png"  # embed-raster of scene.tif writes scene.quicklook.png beside it
    picture.write_bytes(b"my picture")
    with pytest.raises(GAIRError, match="would overwrite .*scene.quicklook.png, which belongs to the input"):
        engine.embed_raster(picture, tmp_path / "scene.tif")
    emb = tmp_path / "emb.tif"
    emb.write_bytes(b"raster")
    (tmp_path / "emb.pca.npz").write_bytes(b"its projection")  # an input's sidecar is the input's too
    with pytest.raises(GAIRError, match="emb.pca.npz, which belongs to the input"):
        check_paths("cluster_embeddings", {"raster_path": emb, "out_path": tmp_path / "emb.tiff"})
    check_paths("cluster_embeddings", {"raster_path": emb, "out_path": tmp_path / "classes.tif",
                                       "polygons_path": tmp_path / "emb.gpkg"})  # a GeoPackage has no such sidecar
    assert picture.read_bytes() == b"my picture" and (tmp_path / "emb.pca.npz").read_bytes() == b"its projection"


# ---- 2. a layer written into an existing GeoPackage replaces that layer only -------------------------------------
def _three_layer_geopackage(path: Path, crs) -> Path:
    pts = shapely.points([500100.0, 500200.0], [4499100.0, 4499300.0])
    write_gpkg(path, pts, {"name": np.array(["well", "mill"], dtype=object)}, crs, layer="sites",
               layer_metadata={"GAIR_NOTE": "sites"}, tables={META_TABLE: {"GAIR_NOTE": np.array(["sites"], object)}})
    write_gpkg(path, np.array([shapely.box(500000, 4499000, 500300, 4499400)], object), {"area": np.array([1.5])},
               crs, layer="parcels")
    write_gpkg(path, None, {"note": np.array(["keep me"], dtype=object)}, None, layer="notes")
    with sqlite3.connect(path) as db:  # what QGIS writes when a style is saved into the GeoPackage
        db.execute("CREATE TABLE layer_styles (id INTEGER PRIMARY KEY, f_table_name TEXT, styleName TEXT, "
                   "styleQML TEXT)")
        db.execute("INSERT INTO layer_styles (f_table_name, styleName, styleQML) VALUES ('parcels', 'red', '<qgis/>')")
    db.close()
    return path


def _snapshot(path: Path, layers=("sites", "parcels", "notes")) -> dict:
    out = {}
    for name in layers:
        meta, fids, wkb, columns = pyogrio.raw.read(path, layer=name, return_fids=True)
        out[name] = (list(meta["fields"]), fids.tolist(), None if wkb is None else [bytes(g) for g in wkb],
                     [c.tolist() for c in columns], meta.get("crs"))
    with sqlite3.connect(path) as db:
        out["layer_styles"] = db.execute("SELECT * FROM layer_styles ORDER BY id").fetchall()
    db.close()
    out["sites meta"] = read_layer_metadata(path, "sites")
    return out


def _layers(path: Path) -> list[str]:
    return sorted(str(n) for n, _ in pyogrio.list_layers(path))


def test_embed_features_into_an_existing_geopackage_keeps_its_other_layers(tmp_path, bundle, capsys):
    s2 = write_raster(tmp_path / "s2.tif", synthetic_s2(96, 96, seed=3))
    points = write_gpkg(tmp_path / "points.gpkg", shapely.points([500300.0, 500500.0], [4499500.0, 4499300.0]),
                        {"id": np.array([1, 2])}, "EPSG:32633", layer="points")
    target = _three_layer_geopackage(tmp_path / "project.gpkg", "EPSG:32633")
    before = _snapshot(target)
    assert before["sites meta"] == {"GAIR_NOTE": "sites"}
    for _ in range(2):  # a second run replaces its own layer, still nothing else
        assert main(["embed-features", str(s2), str(points), str(target), "--model", str(bundle), "--quiet"]) == 0
        assert _snapshot(target) == before
        assert _layers(target) == sorted(["sites", "parcels", "notes", "points", META_TABLE])
    capsys.readouterr()
    emb = read_layer_metadata(target, "points")
    assert emb["GAIR_KIND"] == "embedding" and "GAIR_NOTE" not in emb
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cluster_polygons_into_an_existing_geopackage_keep_its_other_layers(tmp_path, planted, capsys):
    target = _three_layer_geopackage(tmp_path / "project.gpkg", planted.crs)
    before = _snapshot(target)
    assert main(["cluster-embeddings", str(planted.path), str(tmp_path / "c.tif"), "--k", "3", "--polygons",
                 str(target), "--quiet"]) == 0
    capsys.readouterr()
    assert _snapshot(target) == before
    assert _layers(target) == sorted(["sites", "parcels", "notes", "clusters", META_TABLE])


def test_a_file_that_is_not_a_geopackage_is_not_replaced(tmp_path, planted, capsys):
    target = tmp_path / "notes.gpkg"
    target.write_text("my notes, not a GeoPackage")
    cli_fails(capsys, ["cluster-embeddings", planted.path, tmp_path / "c.tif", "--polygons", target],
           "is not a GeoPackage")
    assert target.read_text() == "my notes, not a GeoPackage" and not (tmp_path / "c.tif").exists()


# ---- 3. outputs that cannot be written fail before the work ----------------------------------------------------------
def test_an_output_that_is_a_folder_fails_before_any_work(tmp_path, planted, capsys):
    s2 = write_raster(tmp_path / "s2.tif", synthetic_s2(96, 96, seed=3))
    folder = tmp_path / "results"
    folder.mkdir()
    cli_fails(capsys, ["embed-raster", s2, folder, "--model", tmp_path / "no-model"], "is an existing folder",
           "give a file name inside it")
    cli_fails(capsys, ["cluster-embeddings", planted.path, folder], "is an existing folder")
    cli_fails(capsys, ["cluster-embeddings", planted.path, tmp_path / "c.tif", "--polygons", folder],
           "--polygons", "is an existing folder")
    (tmp_path / "file").write_text("x")
    cli_fails(capsys, ["cluster-embeddings", planted.path, tmp_path / "file" / "sub" / "c.tif"],
           "cannot create the folder", "file is a file")
    cli_fails(capsys, ["convert-checkpoint", tmp_path / "file", s2], "is an existing file, not a folder")
    assert list(folder.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "planted.tif", "results", "s2.tif"]
    created = tmp_path / "new" / "sub" / "c.tif"  # a folder that can be created is fine
    assert main(["cluster-embeddings", str(planted.path), str(created), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "new" / "sub").iterdir()) == ["c.tif", "c.tif.aux.xml"]


@contextlib.contextmanager
def read_only(folder: Path):
    """A folder nobody can write into: mode 555, and for root (CI runs as root) the immutable flag as well."""
    folder.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    try:
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_a_read_only_output_folder_fails_before_any_work(tmp_path, planted, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    with read_only(folder):
        cli_fails(capsys, ["cluster-embeddings", planted.path, folder / "c.tif"], "permission denied")
        cli_fails(capsys, ["cluster-embeddings", planted.path, folder / "new" / "c.tif"], "cannot create a folder in")
        assert list(folder.iterdir()) == []


# ---- 4 and 5. signals, killed runs and two runs at once ------------------------------------------------------------
# A cluster run that pauses after its first output block until it is cancelled (or killed): the output's temp file
# exists, the lock is held. Nothing here depends on timing: the test waits for the marker file, then signals.
PAUSING_RUN = """
import sys, time
from pathlib import Path
import engine.io.embedding_raster as er
from engine.cli.main import main

walk, marker = er.walk, Path(sys.argv[1])


def pausing_walk(windows, progress=None, cancel=None, what=""):
    for i, window in enumerate(walk(windows, progress, cancel, what)):
        yield window
        if i == 0 and what.startswith("reading"):
            marker.touch()
            deadline = time.monotonic() + 120
            while not (cancel and cancel()) and time.monotonic() < deadline:
                time.sleep(0.02)


er.walk = pausing_walk
sys.exit(main(sys.argv[2:]))
"""


def _start_paused_run(tmp_path: Path, planted, output: Path) -> subprocess.Popen:
    marker = tmp_path / "paused"
    marker.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", PAUSING_RUN, str(marker), "cluster-embeddings", str(planted.path),
                             str(output), "--k", "3", "--block-size", "64", "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached its first block"
        time.sleep(0.05)
    return proc


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "Ctrl-C"])
def test_sigterm_and_ctrl_c_cancel_leaving_nothing(tmp_path, planted, signum, code):
    out = tmp_path / "out"
    out.mkdir()
    proc = _start_paused_run(tmp_path, planted, out / "c.tif")
    assert [n for n in _hidden(out) if ".tmp-" in n] and lock_file_path(out / "c.tif").name in _hidden(out)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "cancelled; no output was written" in err and "Traceback" not in err, err
    assert list(out.iterdir()) == []  # no output, no temp file, no lock file


def test_a_killed_runs_temp_files_are_removed_by_the_next_run_of_that_output(tmp_path, planted, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".other.tif.tmp-0123abcd.tif").write_bytes(b"another output's temp")  # not ours: stays
    proc = _start_paused_run(tmp_path, planted, out / "c.tif")
    proc.kill()
    proc.communicate(timeout=120)
    left = [n for n in _hidden(out) if n.startswith(".c.tif.tmp-")]
    assert left and not (out / "c.tif").exists()
    assert main(["cluster-embeddings", str(planted.path), str(out / "c.tif"), "--k", "3", "--quiet"]) == 0
    capsys.readouterr()
    assert _hidden(out) == [".other.tif.tmp-0123abcd.tif"]  # the killed run's temp and its lock file are gone
    assert (out / "c.tif").is_file()


def test_a_second_run_on_the_same_output_fails_at_once_naming_the_first(tmp_path, planted, capsys):
    out = tmp_path / "c.tif"
    proc = _start_paused_run(tmp_path, planted, out)
    try:
        cli_fails(capsys, ["cluster-embeddings", planted.path, out, "--k", "3"],
               f"is being written by another run (pid {proc.pid})")
        assert [n for n in _hidden(tmp_path) if n.startswith(".c.tif.tmp-")]  # the first run's temp is untouched
        assert main(["cluster-embeddings", str(planted.path), str(tmp_path / "d.tif"), "--k", "3", "--quiet"]) == 0
    finally:
        proc.terminate()
        proc.communicate(timeout=120)
    assert proc.returncode == 143 and not out.exists()


def test_output_lock_is_reentrant_in_a_thread_and_exclusive_across_threads(tmp_path):
    target = tmp_path / "x.tif"
    errors = []
    with OutputLock(target) as outer:
        with OutputLock(target) as inner:  # an operation calling another on its own output
            assert outer.fresh and not inner.fresh
        thread = threading.Thread(target=lambda: errors.append(_try_lock(target)))
        thread.start()
        thread.join()
        assert lock_file_path(target).is_file()
    assert errors and f"pid {os.getpid()}" in errors[0]
    assert not lock_file_path(target).exists()
    with OutputLock(target) as again:
        assert again.fresh


def _try_lock(target: Path) -> str:
    try:
        with OutputLock(target):
            return "took it"
    except GAIRError as exc:
        return str(exc)


def test_a_folder_without_write_permission_is_named_in_the_error(tmp_path, planted, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # what a read-only folder answers (not as root)
    with pytest.raises(GAIRError, match=r"cannot write to .* \(permission denied: read-only folder\) for output"):
        check_paths("cluster_embeddings", {"raster_path": planted.path, "out_path": tmp_path / "c.tif"})
    with pytest.raises(GAIRError, match=r"cannot create a folder in .* \(permission denied"):
        check_paths("cluster_embeddings", {"raster_path": planted.path, "out_path": tmp_path / "new" / "c.tif"})


def test_first_sigterm_asks_to_stop_the_second_interrupts():
    from engine.cli.main import cancel_on_interrupt

    class Args:
        cancellable = True

    args, previous = Args(), signal.getsignal(signal.SIGTERM)
    with cancel_on_interrupt(args) as cancel:
        assert not cancel()
        os.kill(os.getpid(), signal.SIGTERM)
        assert cancel() and args.stop_signal == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == previous  # restored
