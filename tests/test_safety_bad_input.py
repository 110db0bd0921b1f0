"""Bad input gets one line naming the file and the problem, never a traceback (issue 15, "Bad input"): damaged or
cut-short rasters, model files and folders, a model folder another user has not shared, impossible outputs, a
k beyond the data (refused before any fitting), and photos that are FIFOs or decompression bombs (flagged per row)."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import shapely
import torch
from PIL import Image

import engine
from engine.analysis import cluster as cluster_module
from engine.analysis.synthetic import make_planted_raster
from engine.cli.main import main
from engine.errors import GAIRError
from engine.io.files import current_umask
from engine.model.onnx_export import export_onnx
from engine.runtime.preprocess import MAX_PHOTO_PIXELS, load_photo
from tests.cli_helpers import cli_fails

from .test_pipeline_raster import synthetic_s2, write_raster
from .test_pipeline_vectors import read_output, write_layer

ROOT = Path(__file__).resolve().parents[1]


def _cut(src: Path, dst: Path, keep: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    bundle = engine.save_bundle(engine.GAIRModel(engine.GAIRConfig.tiny(rs_input_size=96)), root / "tiny")
    s2 = write_raster(root / "s2.tif", synthetic_s2(160, 160))
    # a COG keeps its header first: cutting its tail leaves a file that opens and fails half-way through the reads
    rasterio.shutil.copy(s2, root / "s2_cog.tif", driver="COG", blocksize=64, compress="NONE")
    emb = make_planted_raster(root / "emb.tif", dims=8, height=256, width=256, seed=2).path
    return root, bundle, s2, emb


def test_cut_short_geotiffs(files, tmp_path, capsys):
    root, bundle, s2, emb = files
    cog = _cut(root / "s2_cog.tif", tmp_path / "cog_cut.tif", 0.5)
    cli_fails(capsys, ["embed-raster", cog, tmp_path / "o.tif", "--model", bundle], "cannot read raster cog_cut.tif",
           "damaged or cut short")
    head_cut = _cut(s2, tmp_path / "s2_cut.tif", 0.3)  # the GeoTIFF's directory is at its end: cut away
    cli_fails(capsys, ["embed-raster", head_cut, tmp_path / "o.tif", "--model", bundle],
              "cannot open raster s2_cut.tif")
    emb_cut = _cut(emb, tmp_path / "emb_cut.tif", 0.4)
    cli_fails(capsys, ["cluster-embeddings", emb_cut, tmp_path / "c.tif"], "cannot read raster emb_cut.tif",
           "damaged or cut short")
    with rasterio.open(emb) as ds:  # a reference point in the rows that were cut away
        x, y = ds.xy(ds.height - 3, ds.width - 3)
    cli_fails(capsys, ["similarity-search", emb_cut, tmp_path / "s.tif", "--point", x, y],
           "cannot read raster emb_cut.tif", "damaged or cut short")
    (tmp_path / "text.tif").write_text("not a raster")
    cli_fails(capsys, ["cluster-embeddings", tmp_path / "text.tif", tmp_path / "c.tif"], "cannot open raster text.tif")
    assert not any(p.name in ("o.tif", "c.tif", "s.tif") for p in tmp_path.iterdir())


def test_damaged_bundles_and_checkpoints(files, tmp_path, capsys):
    root, bundle, s2, _ = files
    run = ["embed-raster", s2, tmp_path / "o.tif", "--model"]
    cut = shutil.copytree(bundle, tmp_path / "cut")
    _cut(bundle / "model.safetensors", cut / "model.safetensors", 0.5)
    cli_fails(capsys, run + [cut], f"could not read {cut / 'model.safetensors'}: damaged or cut short")
    for name, text, problem in [("json", '{"format": "gair-bundle", "config": {', "is not valid JSON"),
                                ("bytes", "\udcff\udcfe garbage", "is not valid JSON"),
                                ("values", '{"format": "gair-bundle", "fingerprint": "f", '
                                           '"config": {"embed_dim": "x"}}', "holds an invalid model config")]:
        broken = shutil.copytree(bundle, tmp_path / name)
        (broken / "config.json").write_bytes(text.encode("utf-8", "surrogateescape"))
        cli_fails(capsys, run + [broken], f"{broken / 'config.json'} {problem}")
    (tmp_path / "empty.pth").write_bytes(b"")
    cli_fails(capsys, ["convert-checkpoint", tmp_path / "empty.pth", tmp_path / "b"], "empty.pth is empty (0 bytes)")
    torch.save({"model": {"w": torch.zeros(1000)}}, tmp_path / "full.pth")
    _cut(tmp_path / "full.pth", tmp_path / "cut.pth", 0.5)
    cli_fails(capsys, ["convert-checkpoint", tmp_path / "cut.pth", tmp_path / "b"], "could not read checkpoint",
           "cut.pth (damaged, cut short")
    assert not (tmp_path / "b").exists() and not (tmp_path / "o.tif").exists()


def test_damaged_onnx_exports(files, tmp_path, capsys):
    root, bundle, s2, _ = files
    export = export_onnx(bundle, tmp_path / "onnx", check=False)
    assert (os.stat(export).st_mode & 0o777) == 0o777 & ~current_umask()  # not mkdtemp's private 0700
    graph = shutil.copytree(export, tmp_path / "graph")
    _cut(export / "rs_tokens.onnx", graph / "rs_tokens.onnx", 0.5)
    cli_fails(capsys, ["embed-raster", s2, tmp_path / "o.tif", "--model", graph],
           f"cannot load ONNX graph {graph / 'rs_tokens.onnx'}: damaged or cut short")
    query = shutil.copytree(export, tmp_path / "query")
    _cut(export / "query.npz", query / "query.npz", 0.5)
    cli_fails(capsys, ["embed-raster", s2, tmp_path / "o.tif", "--model", query],
           f"cannot read {query / 'query.npz'}: damaged or cut short")
    assert not (tmp_path / "o.tif").exists()


def test_outputs_follow_the_users_umask(tmp_path):
    torch.manual_seed(0)
    model = engine.GAIRModel(engine.GAIRConfig.tiny())
    previous = os.umask(0o022)
    try:
        shared = engine.save_bundle(model, tmp_path / "colleague")
        os.umask(0o077)
        private = engine.save_bundle(model, tmp_path / "private")
    finally:
        os.umask(previous)
    for name in ("model.safetensors", "config.json"):
        assert os.stat(shared / name).st_mode & 0o777 == 0o644  # colleagues can read it
        assert os.stat(private / name).st_mode & 0o777 == 0o600  # a private umask is kept, too
    assert os.stat(shared).st_mode & 0o777 == 0o755


def _as_another_user(argv: list[str]) -> subprocess.CompletedProcess:
    """The CLI run by a user who does not own the files (root: as nobody; otherwise the files get mode 000)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": "/tmp", "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([sys.executable, "-m", "engine", *argv], capture_output=True, text=True, cwd="/",
                          env=env, timeout=300, check=False,
                          **({"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}))


@pytest.mark.parametrize("private", ["weights", "config", "folder"])
def test_a_model_folder_not_shared_says_permission_denied(files, private):
    root, bundle, _, _ = files
    shared = Path(tempfile.mkdtemp(prefix="gair-perm-"))  # pytest's own folders are private to their user
    os.chmod(shared, 0o755)
    folder = shutil.copytree(bundle, shared / "theirs")
    target = {"weights": folder / "model.safetensors", "config": folder / "config.json", "folder": folder}[private]
    os.chmod(target, (0o700 if private == "folder" else 0o600) if os.geteuid() == 0 else 0)
    try:
        done = _as_another_user(["info", str(folder)])
    finally:
        os.chmod(target, 0o755 if private == "folder" else 0o644)
        shutil.rmtree(shared)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"{target}: permission denied" in done.stderr and "No such file" not in done.stderr, done.stderr


def test_outputs_in_impossible_places(files, capsys):
    _, _, _, emb = files
    cli_fails(capsys, ["cluster-embeddings", emb, "/proc/gair/x.tif"], "/proc/gair/x.tif")
    cli_fails(capsys, ["cluster-embeddings", emb, "/dev/null/x.tif"], "/dev/null", "is a file")


def test_k_beyond_the_data_is_refused_before_any_fitting(tmp_path, capsys, monkeypatch):
    planted = make_planted_raster(tmp_path / "small.tif", dims=8, height=40, width=40, seed=1, n_targets=0)
    fits = []
    real_fit = cluster_module.fit_kmeans
    monkeypatch.setattr(cluster_module, "fit_kmeans", lambda *a, **k: fits.append(a[1]) or real_fit(*a, **k))
    cli_fails(capsys, ["cluster-embeddings", planted.path, tmp_path / "c.tif", "--k", 200, "--auto-k"],
           "too few for automatic k up to 200", "a k of at most")
    cli_fails(capsys, ["cluster-embeddings", planted.path, tmp_path / "c.tif", "--k", 250], "too few for 250 clusters")
    assert fits == [] and not (tmp_path / "c.tif").exists()
    with pytest.raises(SystemExit, match="2"):  # above what a class raster holds: a usage error
        main(["cluster-embeddings", str(planted.path), str(tmp_path / "c.tif"), "--k", "300"])
    assert "must be at most 254, got 300" in capsys.readouterr().err


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims width x height (the pixels would take width*height*3 bytes decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_photos_fifo_and_decompression_bombs_are_flagged_per_row(tmp_path, samples_dir):
    photo = shutil.copy(samples_dir / "tokyo_sv.jpg", tmp_path / "ok.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    _png_header_only(tmp_path / "bomb.png", 12000, 12000)  # 144 Mpix: above Pillow's own 2x bomb limit
    _png_header_only(tmp_path / "big.png", 7000, 7000)  # 49 Mpix: Pillow would only warn and decode it
    for name, message in [("pipe.jpg", "is not a regular file"), ("bomb.png", "above the 40 Mpix"),
                          ("big.png", "7000 x 7000 px (49 Mpix), above the 40 Mpix")]:
        outcome: list = []

        def load(name=name, outcome=outcome):
            try:
                load_photo(tmp_path / name)
            except GAIRError as exc:
                outcome.append(str(exc))
        reader = threading.Thread(target=load, daemon=True)
        reader.start()
        reader.join(120)
        if reader.is_alive():  # blocked on the FIFO: give it a writer so the thread ends, then fail
            with open(tmp_path / "pipe.jpg", "wb"):
                pass
            pytest.fail(f"reading {name} blocked")
        assert outcome and message in outcome[0] and name in outcome[0], outcome
    assert MAX_PHOTO_PIXELS == 40_000_000
    paths = np.array([str(photo), "pipe.jpg", "bomb.png", "big.png"], dtype=object)
    layer = write_layer(tmp_path / "sv.gpkg", shapely.points(np.arange(4.0), np.zeros(4)), {"photo": paths},
                        "EPSG:4326")
    torch.manual_seed(0)
    model = engine.GAIRModel(engine.GAIRConfig.tiny()).eval()
    with pytest.warns(UserWarning, match="3 .*unreadable photo"):
        result = engine.embed_photos(layer, tmp_path / "o.gpkg", model)
    vectors, status, _ = read_output(result.path)
    assert np.isfinite(vectors[0]).all() and np.isnan(vectors[1:]).all()
    assert "pipe.jpg is not a regular file" in status[1] and "bomb.png" in status[2] and "49 Mpix" in status[3]
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's global guard is left as it is


def test_output_in_a_folder_the_user_cannot_write(files):
    _, _, _, emb = files
    shared = Path(tempfile.mkdtemp(prefix="gair-ro-"))
    try:
        os.chmod(shared, 0o755)
        raster = Path(shutil.copy(emb, shared / "emb.tif"))
        os.chmod(raster, 0o644)
        locked = shared / "locked"
        locked.mkdir()
        os.chmod(locked, 0o555 if os.geteuid() == 0 else 0o500)  # as root: another user (nobody) runs the command
        done = _as_another_user(["cluster-embeddings", str(raster), str(locked / "c.tif"), "--quiet"])
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "permission denied" in done.stderr and str(locked) in done.stderr, done.stderr
        assert list(locked.iterdir()) == []
    finally:
        os.chmod(shared / "locked", 0o755)
        shutil.rmtree(shared)


def test_a_missing_plain_input_file_is_named_before_any_model_loads(tmp_path, capsys, monkeypatch):
    """A manifest or classifier file that is not there fails at once (no model load, no hub, nothing written)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("GAIR_CHECKPOINT", raising=False)
    cli_fails(capsys, ["embed-rasters", "--manifest", tmp_path / "tiles.txt", tmp_path / "out"],
              "tiles.txt does not exist")
    cli_fails(capsys, ["apply-model", tmp_path / "emb.tif", tmp_path / "clf.skops", tmp_path / "c.tif"],
              "clf.skops does not exist")
    assert sorted(tmp_path.iterdir()) == []
