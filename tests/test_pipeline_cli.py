"""The four CLI commands on the real samples, error exit codes, and torchrun with 2 CPU ranks = 1 process."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
import torch

import engine
from engine.cli.main import main
from engine.io.embedding_raster import PCAProjection
from engine.pipeline import embed_features, embed_raster
from engine.pipeline.blend import LatticeField
from engine.runtime.preprocess import preprocess_rs

from .test_pipeline_raster import one_crop_lattice, synthetic_s2, write_raster

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return engine.save_bundle(engine.GAIRModel(engine.GAIRConfig.tiny()), tmp_path_factory.mktemp("m") / "tiny")


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def test_torchrun_two_cpu_ranks_write_the_same_file(tmp_path, bundle):
    src = write_raster(tmp_path / "in.tif", synthetic_s2(160, 224, seed=7))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "engine",
           "embed-raster", str(src), str(tmp_path / "two.tif"), "--model", str(bundle), "--dims", "4",
           "--batch-size", "2"]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(2 ranks)" in done.stdout
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun worker (OMP_NUM_THREADS=1)
    try:
        embed_raster(src, tmp_path / "one.tif", engine.load_model(bundle, device="cpu"), dims=4, batch_size=2)
    finally:
        torch.set_num_threads(threads)
    with rasterio.open(tmp_path / "one.tif") as a, rasterio.open(tmp_path / "two.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        tags_a, tags_b = a.tags(), b.tags()
    assert {k: v for k, v in tags_a.items() if k != "GAIR_PCA"} == {k: v for k, v in tags_b.items() if k != "GAIR_PCA"}
    with np.load(tmp_path / "one.pca.npz") as pa, np.load(tmp_path / "two.pca.npz") as pb:
        np.testing.assert_array_equal(pa["components"], pb["components"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "one.pca.npz", "one.quicklook.png",
                                                          "one.quicklook.png.aux.xml", "one.tif", "two.pca.npz",
                                                          "two.quicklook.png", "two.quicklook.png.aux.xml", "two.tif"]


def test_vector_commands_on_the_real_samples(tmp_path, samples_dir, bundle, examples, capsys):
    folder = samples_dir
    for row in examples:
        shutil.copy(row["sv_path"], tmp_path / row["sv_image"])
    layer = tmp_path / "examples.gpkg"
    pyogrio.raw.write(layer, shapely.to_wkb(shapely.points([r["lon"] for r in examples], [r["lat"] for r in examples])),
                      [np.array([r["id"] for r in examples], dtype=object),
                       np.array([r["sv_image"] for r in examples], dtype=object)],
                      ["id", "photo"], layer="examples", driver="GPKG", geometry_type="Point", crs="EPSG:4326")
    model = ["--model", str(bundle)]
    assert main(["embed-raster", str(folder / "tokyo_rs.tif"), str(tmp_path / "tokyo.tif"), "--dims", "3", *model]) == 0
    with pytest.warns(UserWarning, match="2 \\(outside raster\\)"):
        args = ["embed-features", str(folder / "tokyo_rs.tif"), str(layer), str(tmp_path / "rs.gpkg"), *model]
        assert main(args) == 0
    assert main(["embed-photos", str(layer), str(tmp_path / "sv.gpkg"), *model]) == 0
    assert main(["embed-locations", str(layer), str(tmp_path / "loc.gpkg"), *model]) == 0
    out = capsys.readouterr().out
    assert "1 of 3 features embedded" in out and out.count("3 of 3 features embedded") == 2
    status = pyogrio.raw.read(tmp_path / "rs.gpkg", layer="examples")[3][-1]
    assert list(status) == ["outside raster", "outside raster", "ok"]  # only the Tokyo photo is on tokyo_rs.tif


def test_cli_errors_are_one_clear_line(tmp_path, bundle, capsys):
    four = write_raster(tmp_path / "rgbn.tif", synthetic_s2(70, 70)[[1, 2, 3, 7]],
                        descriptions=("B2", "B3", "B4", "B8"))
    assert main(["embed-raster", str(four), str(tmp_path / "o.tif"), "--model", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the raster has bands B2, B3, B4, B8") and "Traceback" not in err
    assert not (tmp_path / "o.tif").exists()


def test_onnx_backend_gives_the_same_field_and_points(tmp_path, bundle):
    from engine.model.onnx_export import export_onnx

    onnx = engine.load_model(export_onnx(bundle, tmp_path / "onnx"), backend="onnx", device="cpu")
    torch_model = engine.load_model(bundle, device="cpu")
    assert onnx.fingerprint == torch_model.fingerprint
    src = write_raster(tmp_path / "in.tif", synthetic_s2(64, 96, seed=8))
    fields = []
    for name, model in (("onnx", onnx), ("torch", torch_model)):
        with rasterio.open(embed_raster(src, tmp_path / f"{name}.tif", model, dtype="float32", quicklook=False)) as ds:
            fields.append(ds.read())
    np.testing.assert_allclose(fields[0], fields[1], rtol=1e-4, atol=1e-5)
    layer = tmp_path / "f.gpkg"
    geoms = [shapely.Point(500100.0, 4499700.0), shapely.box(500200.0, 4499500.0, 500700.0, 4499900.0)]
    pyogrio.raw.write(layer, shapely.to_wkb(geoms), [np.arange(2)], ["id"], layer="f", driver="GPKG",
                      geometry_type="Unknown", crs="EPSG:32633")
    vectors = []
    for name, model in (("onnx", onnx), ("torch", torch_model)):
        embed_features(src, layer, tmp_path / f"{name}.gpkg", model)
        columns = pyogrio.raw.read(tmp_path / f"{name}.gpkg", layer="f")[3]
        vectors.append(np.column_stack(columns[1:-1]).astype(np.float64))
    assert np.isfinite(vectors[0]).all()
    np.testing.assert_allclose(vectors[0], vectors[1], rtol=1e-4, atol=1e-5)
    tokens = onnx.rs_tokens(preprocess_rs(synthetic_s2(64, 64)[[1, 2, 3, 4, 5, 6, 7, 8, 10, 11]], onnx.config))[0]
    pca = PCAProjection.from_sample(np.random.default_rng(0).standard_normal((300, 32)), 4, onnx.fingerprint)
    lattice = one_crop_lattice(onnx)
    for mode in ("nili", "bilinear", "bicubic"):  # the raster pipeline's field with the numpy backend's imnet
        field = onnx.dense_field(tokens[None], 64, 64, mode=mode)[0][22:37, 22:37].reshape(-1, 32)
        expected = pca.transform(field).T.reshape(4, 15, 15)
        got = LatticeField(onnx, lattice, mode, pca).block({0: tokens}, 0, 15, 0, 15)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
