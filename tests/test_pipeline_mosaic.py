"""One embedding space for many rasters: --pca-from, and embed_rasters (one COG per input + a VRT mosaic, sharded
over torchrun ranks, re-runs skip finished outputs, same bytes as one process)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

import engine
from engine.cli.main import main
from engine.errors import GAIRError
from engine.io.embedding_raster import EmbeddingRaster
from engine.io.pca import PCAProjection
from engine.pipeline import embed_raster, embed_rasters
from engine.pipeline.mosaic import output_stem, read_manifest

from .test_pipeline_raster import synthetic_s2, write_raster

ROOT = Path(__file__).resolve().parents[1]
TILE = 96  # pixels per tile side (the tiny model's crop is 64 px)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return engine.save_bundle(engine.GAIRModel(engine.GAIRConfig.tiny()), tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture(scope="module")
def model(bundle):
    return engine.load_model(bundle, device="cpu")


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return synthetic_s2(TILE, 3 * TILE, seed=11)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory, scene) -> list[Path]:
    """Three side-by-side tiles of one scene; the last one is a later 'date' with a nodata corner."""
    folder = tmp_path_factory.mktemp("tiles")
    paths = []
    for k in range(3):
        data = scene[:, :, k * TILE:(k + 1) * TILE].copy()
        if k == 2:
            data[:, 70:, 80:] = 0
        paths.append(write_raster(folder / f"T{k}.tif", data,
                                  transform=from_origin(500000.0 + k * TILE * 10, 4500000.0, 10.0, 10.0)))
    return paths


def _content(path: Path) -> bytes:
    """A file's bytes; for a .npz its arrays' (zip entries carry the time they were written)."""
    if path.suffix != ".npz":
        return path.read_bytes()
    with np.load(path) as data:
        return b"".join(data[k].tobytes() for k in sorted(data.files))


def _read(path: Path) -> np.ndarray:
    with EmbeddingRaster(path) as raster, rasterio.open(path) as ds:
        return raster.read_block(rasterio.windows.Window(0, 0, ds.width, ds.height))


def test_pca_from_puts_two_rasters_in_one_space(tmp_path, scene, model):
    """The east two thirds of a scene, embedded through the whole scene's PCA: same space identity, and where the
    two overlap (more than a crop away from the sub-raster's west edge, which is mirrored there and real data in
    the whole scene) the same vectors; a PCA of its own is another space."""
    full = write_raster(tmp_path / "full.tif", scene)
    east = write_raster(tmp_path / "east.tif", scene[:, :, TILE:],
                        transform=from_origin(500000.0 + TILE * 10, 4500000.0, 10.0, 10.0))
    same = dict(dtype="float32", overlap=0.5)
    embed_raster(full, tmp_path / "full_emb.tif", model, dims=4, **same)
    embed_raster(east, tmp_path / "east_npz.tif", model, pca_from=tmp_path / "full_emb.pca.npz", **same)
    embed_raster(east, tmp_path / "east_tif.tif", model, dims=4, pca_from=tmp_path / "full_emb.tif", **same)
    embed_raster(east, tmp_path / "east_own.tif", model, dims=4, **same)
    spaces = {}
    for name in ("full_emb", "east_npz", "east_tif", "east_own"):
        with EmbeddingRaster(tmp_path / f"{name}.tif") as raster:
            spaces[name] = raster.meta.space
    assert spaces["full_emb"] == spaces["east_npz"] == spaces["east_tif"]
    assert spaces["east_own"].pca != spaces["full_emb"].pca
    a = _read(tmp_path / "full_emb.tif")[:, :, TILE + TILE:]
    b = _read(tmp_path / "east_npz.tif")[:, :, TILE:]
    own = _read(tmp_path / "east_own.tif")[:, :, TILE:]
    np.testing.assert_array_equal(b, _read(tmp_path / "east_tif.tif")[:, :, TILE:])
    scale = np.abs(a).max()
    assert np.abs(a - b).max() / scale < 1e-4  # measured: 0 (a tile, 96 px, is 3 strides of overlap 0.5: one lattice)
    assert np.abs(a - own).max() / scale > 0.05  # a PCA of its own has other axes (measured: 0.16)


def test_pca_from_refuses_another_model_or_dims(tmp_path, scene, model):
    src = write_raster(tmp_path / "s2.tif", scene[:, :, :TILE])
    torch.manual_seed(5)
    other = engine.GAIRModel(engine.GAIRConfig.tiny()).eval()
    foreign = PCAProjection.from_sample(np.random.default_rng(0).standard_normal((64, 32)), 4, other.fingerprint)
    foreign.save(tmp_path / "foreign.pca.npz")
    with pytest.raises(GAIRError, match="fitted on the vectors of model"):
        embed_raster(src, tmp_path / "a.tif", model, pca_from=tmp_path / "foreign.pca.npz")
    wide = PCAProjection.from_sample(np.random.default_rng(0).standard_normal((64, 48)), 4, model.fingerprint)
    with pytest.raises(GAIRError, match="takes 48-dim vectors but the model gives 32"):
        embed_raster(src, tmp_path / "a.tif", model, pca_from=wide)
    mine = PCAProjection.from_sample(np.random.default_rng(0).standard_normal((64, 32)), 4, model.fingerprint)
    with pytest.raises(GAIRError, match="--dims 3 differs from the 4 dims"):
        embed_raster(src, tmp_path / "a.tif", model, dims=3, pca_from=mine)
    embed_raster(src, tmp_path / "full.tif", model, dims=0, quicklook=False)
    with pytest.raises(GAIRError, match="keeps the model's full space"):
        embed_raster(src, tmp_path / "a.tif", model, pca_from=tmp_path / "full.tif")
    assert not (tmp_path / "a.tif").exists()


def test_many_inputs_one_space_a_vrt_mosaic_and_reruns_skip(tmp_path, tiles, model, monkeypatch):
    out = tmp_path / "out"
    result = embed_rasters(tiles, out, model, dims=4, batch_size=2)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["mosaic.vrt", "mosaic.pca.npz", "mosaic.pca.json", *[
        f"T{k}{s}" for k in range(3) for s in (".tif", ".pca.npz", ".quicklook.png", ".quicklook.png.aux.xml")]])
    assert result.skipped == [] and result.mosaics == [str(out / "mosaic.vrt")]
    shared = PCAProjection.load(out / "mosaic.pca.npz")
    spaces = set()
    for k in range(3):
        with EmbeddingRaster(out / f"T{k}.tif") as raster:
            spaces.add(raster.meta.space.id)
            assert raster.pca.sha == shared.sha
    with EmbeddingRaster(out / "mosaic.vrt") as mosaic:  # the mosaic opens as an embedding raster itself
        assert {mosaic.meta.space.id} == spaces and result.space in spaces and mosaic.pca.sha == shared.sha
        with rasterio.open(out / "mosaic.vrt") as ds:
            assert (ds.width, ds.height, ds.count) == (3 * TILE, TILE, 4)
            assert ds.transform == from_origin(500000.0, 4500000.0, 10.0, 10.0)
            whole = ds.read()
    for k in range(3):
        with rasterio.open(out / f"T{k}.tif") as ds:
            np.testing.assert_array_equal(whole[:, :, k * TILE:(k + 1) * TILE], ds.read())
    assert (whole[:, 80:, 2 * TILE + 90:] == -128).all()  # the nodata corner stays nodata in the mosaic

    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("T*.tif")}
    with monkeypatch.context() as patch:  # the same inputs and settings: the PCA fitted before, no new sample
        patch.setattr("engine.pipeline.mosaic._sample_input", lambda *a, **k: pytest.fail("sampled again"))
        again = embed_rasters(tiles, out, model, dims=4, batch_size=2)
    assert sorted(Path(p).name for p in again.skipped) == ["T0.tif", "T1.tif", "T2.tif"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("T*.tif")} == {k: v[0] for k, v in before.items()}
    # an output cut short, and one whose quicklook is missing, are redone; the finished one is kept
    (out / "T1.tif").write_bytes(before["T1.tif"][1][:5000])
    (out / "T2.quicklook.png").unlink()
    third = embed_rasters(tiles, out, model, dims=4, batch_size=2)
    assert [Path(p).name for p in third.skipped] == ["T0.tif"]
    assert {p.name: p.read_bytes() for p in out.glob("T*.tif")} == {k: v[1] for k, v in before.items()}
    # other settings are another run: nothing is skipped
    assert embed_rasters(tiles, out, model, dims=4, batch_size=2, overlap=0.5).skipped == []


def test_manifest_names_and_refusals(tmp_path, tiles, model, bundle, capsys):
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# tiles\n{tiles[0]}\n\n{os.path.relpath(tiles[1], tmp_path)}\n")
    assert read_manifest(manifest) == [tiles[0], tmp_path / os.path.relpath(tiles[1], tmp_path)]
    assert output_stem("S2A_MSIL2A_T33UUP.SAFE.zip") == "S2A_MSIL2A_T33UUP"
    assert output_stem("/data/T33UUP_B02_10m.jp2") == "T33UUP_B02_10m"
    assert output_stem("/data/S2B_MSIL2A_T32TQM.SAFE/MTD_MSIL2A.xml") == "S2B_MSIL2A_T32TQM"
    with pytest.raises(GAIRError, match="no input rasters"):
        embed_rasters([], tmp_path / "o", model)
    with pytest.raises(GAIRError, match="would both be written as T0.tif"):
        embed_rasters([tiles[0], tmp_path / "T0.tif"], tmp_path / "o", model) if (
            write_raster(tmp_path / "T0.tif", synthetic_s2(8, 8))) else None
    with pytest.raises(GAIRError, match="int16 scales are fitted per raster"):
        embed_rasters(tiles, tmp_path / "o", model, dtype="int16")
    result = embed_rasters([], tmp_path / "m", model, manifest=manifest, dims=0, dtype="float32", quicklook=False)
    assert result.pca is None and [Path(p).name for p in result.outputs] == ["T0.tif", "T1.tif"]
    with EmbeddingRaster(tmp_path / "m" / "mosaic.vrt") as mosaic:
        assert mosaic.meta.dims == 32 and mosaic.pca is None
    args = ["embed-rasters", "--manifest", str(manifest), str(tmp_path / "cli"), "--model", str(bundle), "--dims", "0",
            "--dtype", "float32", "--no-quicklook", "--quiet"]
    assert main(args) == 0 and "wrote 2 embedding raster(s), skipped 0" in capsys.readouterr().out
    assert [_content(tmp_path / "cli" / n) for n in ("T0.tif", "T1.tif", "mosaic.vrt")] == [
        _content(tmp_path / "m" / n) for n in ("T0.tif", "T1.tif", "mosaic.vrt")]


def test_torchrun_two_ranks_share_inputs_and_write_the_same_bytes(tmp_path, tiles, bundle, model):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "engine",
           "embed-rasters", *map(str, tiles), str(tmp_path / "two"), "--model", str(bundle), "--dims", "4",
           "--batch-size", "2"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(2 ranks)" in done.stdout and "wrote 3 embedding raster(s)" in done.stdout
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun worker (OMP_NUM_THREADS=1)
    try:
        embed_rasters(tiles, tmp_path / "one", model, dims=4, batch_size=2)
    finally:
        torch.set_num_threads(threads)
    one, two = ({p.name: _content(p) for p in (tmp_path / run).iterdir()} for run in ("one", "two"))
    assert sorted(one) == sorted(two) and len(one) == 15
    differ = [name for name in sorted(one) if one[name] != two[name]]
    assert differ == [], " ".join(differ)


def test_products_in_many_inputs(tmp_path, model):
    """Sentinel-2 products (a .SAFE zip, a .SAFE folder) are inputs like rasters; product options (here the
    radiometric offset) reach both the shared PCA's sample and every raster."""
    from .test_s2_products import ground, make_safe, zip_of

    old = zip_of(make_safe(tmp_path / "a", ground(1), baseline="03.01", offsets=False))
    new = make_safe(tmp_path / "b", ground(2), baseline="05.10", offsets=True)
    result = embed_rasters([old, new / "MTD_MSIL2A.xml"], tmp_path / "out", model, dims=3, radiometric_offset=0,
                           quicklook=False)
    assert [Path(p).name for p in result.outputs] == [old.name.removesuffix(".zip").removesuffix(".SAFE") + ".tif",
                                                      new.stem + ".tif"]
    for path in result.outputs:
        with EmbeddingRaster(path) as raster:
            assert raster.pca.sha == PCAProjection.load(tmp_path / "out" / "mosaic.pca.npz").sha
    with rasterio.open(tmp_path / "out" / "mosaic.vrt") as ds:  # both products cover the same ground
        assert (ds.width, ds.height) == (128, 128)
    # --mask-clouds without an SCL band stops the run at the shared sample, before anything is written
    with pytest.raises(GAIRError, match=r"SCL.*--mask-clouds"):
        embed_rasters([old, new], tmp_path / "masked", model, dims=3, mask_clouds=True)
    assert not (tmp_path / "masked").exists()


def test_tiles_in_two_utm_zones_get_one_vrt_each(tmp_path, scene, model):
    west = write_raster(tmp_path / "west.tif", scene[:, :, :TILE], crs="EPSG:32633")
    east = write_raster(tmp_path / "east.tif", scene[:, :, TILE:2 * TILE], crs="EPSG:32634")
    result = embed_rasters([west, east], tmp_path / "out", model, dims=3, quicklook=False)
    assert [Path(p).name for p in result.mosaics] == ["mosaic_32633_10m.vrt", "mosaic_32634_10m.vrt"]
    for vrt, tif in zip(result.mosaics, result.outputs, strict=True):
        with rasterio.open(vrt) as a, rasterio.open(tif) as b:
            assert a.crs == b.crs and a.transform == b.transform
            np.testing.assert_array_equal(a.read(), b.read())
        with EmbeddingRaster(vrt) as mosaic:
            assert mosaic.pca.sha == PCAProjection.load(tmp_path / "out" / "mosaic.pca.npz").sha


def test_the_worker_runs_it_as_any_operation(tmp_path, tiles, bundle):
    from engine.service.jobs import JobRunner

    messages = []
    reply = JobRunner().run("j", "embed_rasters", {"inputs": [str(p) for p in tiles[:2]], "dims": 3,
                                                   "output_dir": str(tmp_path / "out"), "model": str(bundle)},
                            messages.append)
    assert reply["type"] == "result", reply
    assert reply["result"]["mosaics"] == [str(tmp_path / "out" / "mosaic.vrt")] and reply["result"]["skipped"] == []
    progress = [m["fraction"] for m in messages if m["type"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == 1.0
