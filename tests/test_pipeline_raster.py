"""embed_raster: no steps where crops meet, the lattice field is the crop's own inside it, output format,
PCA/int16, cancel, bad inputs, memory."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

import engine
from engine import Cancelled, GAIRError
from engine.config import S2_MEAN, S2_STD
from engine.io.embedding_raster import EmbeddingRaster, band_names
from engine.io.files import output_files, quicklook_path
from engine.io.pca import PCAProjection
from engine.io.space import EmbeddingSpace
from engine.pipeline import embed_raster
from engine.pipeline import raster as raster_module
from engine.pipeline.bands import L2A_12
from engine.pipeline.blend import LatticeField
from engine.pipeline.source import OutputGrid, SourceRaster
from engine.runtime.preprocess import preprocess_rs

CROP = 64  # GAIRConfig.tiny() crop_pixels
MODEL_BANDS = [1, 2, 3, 4, 5, 6, 7, 8, 10, 11]  # of the 12-band L2A order


def synthetic_s2(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(12, H, W) uint16 L2A-like DN: smooth random land cover mixing spectra around the reference band means."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    base = gaussian_filter(rng.standard_normal((3, height, width)), 6, mode="wrap")
    base /= base.std(axis=(1, 2), keepdims=True)
    mean = np.interp(np.arange(12), MODEL_BANDS, S2_MEAN)[:, None, None]
    std = np.interp(np.arange(12), MODEL_BANDS, S2_STD)[:, None, None]
    dn = mean + 0.8 * std * np.einsum("bk,khw->bhw", rng.standard_normal((12, 3)), base) / np.sqrt(3)
    return np.clip(dn, 1, 10000).astype(np.uint16)


def write_raster(path: Path, data: np.ndarray, crs="EPSG:32633", descriptions=tuple(L2A_12), nodata=0,
                 transform=None) -> Path:
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype.name, crs=crs, nodata=nodata, tiled=True, blockxsize=256, blockysize=256,
                   transform=transform or from_origin(500000.0, 4500000.0, 10.0, 10.0))
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        for i, name in enumerate(descriptions or ()):
            ds.set_band_description(i + 1, name)
    return path


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return engine.GAIRModel(engine.GAIRConfig.tiny()).eval()


@pytest.fixture(scope="module")
def s2_raster(tmp_path_factory) -> Path:
    data = synthetic_s2(160, 224)
    data[:, 140:, 200:] = 0  # a nodata corner
    return write_raster(tmp_path_factory.mktemp("s2") / "s2.tif", data)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def _step_profile(field: np.ndarray, axis: int) -> np.ndarray:
    """Mean (over the other axis) L2 difference between neighbouring pixels: entry j is between j and j+1."""
    steps = np.linalg.norm(np.diff(field, axis=axis), axis=0)
    return np.nanmean(steps, axis=0 if axis == 2 else 1)


def crop_by_crop_field(model, path) -> tuple[np.ndarray, object]:
    """(D, H, W) field with every pixel from the one crop holding it, each crop read through its own zero-padded
    token grid (how rasters were tiled before the token lattice), and the lattice: the control showing the seam
    measures see seams."""
    with SourceRaster(path, model.config) as src:
        grid = src.output_grid(None)
        crop = src.crop_size_px(grid.res_m)[0]
        lattice = raster_module.raster_lattice(grid, crop, crop, 0.0, model.config.rs_grid)
        out = np.full((model.config.embed_dim, grid.height, grid.width), np.nan, np.float32)
        for i in range(len(lattice)):  # later crops overwrite: crop k holds the pixels from its start on
            r0, c0 = lattice.origin(i)
            data, _ = src.read(src.window_of(grid, r0, c0, crop, crop))
            tokens = model.rs_tokens(preprocess_rs(data[None], model.config))
            field = np.asarray(model.dense_field(tokens, crop, crop))[0].transpose(2, 0, 1)
            a, b, c, d = max(0, r0), min(grid.height, r0 + crop), max(0, c0), min(grid.width, c0 + crop)
            out[:, a:b, c:d] = field[:, a - r0:b - r0, c - c0:d - c0]
        return out, lattice


@pytest.mark.parametrize("axis", [1, 2])
def test_no_steps_where_crops_meet(tmp_path, tiny_model, axis):
    """Crops abut (overlap 0), yet where one crop's cells meet the next the field steps no more than inside a crop:
    NILI reads the neighbouring crop's cells across the joint. Crop-by-crop fields do step there."""
    src = write_raster(tmp_path / "in.tif", synthetic_s2(160, 224, seed=1))
    field = _read(embed_raster(src, tmp_path / "e.tif", tiny_model, dims=0, dtype="float32", quicklook=False))
    hard, lattice = crop_by_crop_field(tiny_model, src)
    axis_lattice, length = (lattice.rows, 160) if axis == 1 else (lattice.cols, 224)
    joints = [axis_lattice.start(k) - 1 for k in range(1, axis_lattice.count) if 0 < axis_lattice.start(k) < length]
    inside = np.setdiff1d(np.arange(length - 1), joints)
    assert len(joints) >= 2
    for name, values in (("lattice", field), ("crop by crop", hard)):
        steps = _step_profile(values, axis)
        ratio = steps[joints].max() / steps[inside].max()
        assert (ratio <= 1.0) if name == "lattice" else (ratio > 2.0), (name, ratio)


def one_crop_lattice(model, scene: int = 15):
    """A scene small enough for one crop of the tiny model (64 px, 6 cells; the lattice starts 22 px before it)."""
    grid = OutputGrid(scene, scene, None, 1.0, 1.0, (10.0, 10.0), 0, 0, scene, scene)
    lattice = raster_module.raster_lattice(grid, CROP, CROP, 0.0, model.config.rs_grid)
    assert len(lattice) == 1 and lattice.origin(0) == (-22, -22)
    return lattice


@pytest.mark.parametrize("mode", ["nili", "bilinear", "bicubic"])
def test_lattice_field_is_the_crops_own_field_inside_it(tiny_model, mode):
    """Where a pixel's cells and their neighbours all lie inside one crop, the lattice field is that crop's own
    dense field (the model's NILI); with a PCA, the same projected (computed in the PCA space)."""
    lattice = one_crop_lattice(tiny_model)
    rng = np.random.default_rng(0)
    tokens = rng.standard_normal((1, 36, 32)).astype(np.float32)
    expected = tiny_model.dense_field(tokens, CROP, CROP, mode=mode)[0][22:37, 22:37].transpose(2, 0, 1)
    got = LatticeField(tiny_model, lattice, mode, None).block({0: tokens[0]}, 0, 15, 0, 15)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    pca = PCAProjection.from_sample(rng.standard_normal((400, 32)) * np.linspace(3, 0.1, 32), 5, "m")
    reduced = LatticeField(tiny_model, lattice, mode, pca).block({0: tokens[0]}, 0, 15, 0, 15)
    projected = pca.transform(expected.reshape(32, -1).T).T.reshape(5, 15, 15)
    assert reduced.dtype == np.float32
    np.testing.assert_allclose(reduced, projected, rtol=1e-4, atol=1e-4 * np.abs(projected).max())


def test_polygon_mean_of_the_field_never_builds_it(tiny_model):
    """LatticeField.mean (polygon means) equals the weighted mean of the block it does not build; pixels whose
    cells have no token are left out."""
    lattice = one_crop_lattice(tiny_model)
    tokens = {0: np.random.default_rng(1).standard_normal((36, 32)).astype(np.float32)}
    field = LatticeField(tiny_model, lattice, "nili", None)
    block = field.block(tokens, 2, 13, 1, 12)
    weights = np.random.default_rng(2).random((11, 11)) * (np.random.default_rng(3).random((11, 11)) > 0.3)
    expected = (block * weights).sum(axis=(1, 2)) / weights.sum()
    np.testing.assert_allclose(field.mean(tokens, 2, 13, 1, 12, weights), expected, rtol=1e-4, atol=1e-5)
    assert field.mean({}, 2, 13, 1, 12, weights) is None and np.isnan(field.block({}, 2, 13, 1, 12)).all()


def test_output_format_nodata_and_quicklook(tmp_path, s2_raster, tiny_model):
    out = embed_raster(s2_raster, tmp_path / "e.tif", tiny_model, dtype="float32")
    with rasterio.open(out) as ds, rasterio.open(s2_raster) as src:
        assert (ds.width, ds.height, ds.count, ds.dtypes[0]) == (224, 160, 32, "float32")
        assert ds.transform == src.transform and ds.crs == src.crs and ds.profile["tiled"]
        assert ds.compression is not None and list(ds.descriptions) == band_names(32)
        tags = ds.tags()
        assert tags["GAIR_KIND"] == "embedding" and tags["GAIR_MODEL"] == tiny_model.fingerprint
        assert tags["GAIR_SPACE"] == EmbeddingSpace(tiny_model.fingerprint, "nili", "released").id
        assert (tags["GAIR_QUERY_MODE"], tags["GAIR_CROP_PIXELS"], tags["GAIR_DIMS"]) == ("nili", "64", "32")
        field, nodata = ds.read(), src.read(1) == 0
    assert np.isnan(field[:, nodata]).all() and np.isfinite(field[:, ~nodata]).all()
    from PIL import Image

    with Image.open(quicklook_path(out)) as look:
        assert look.mode == "RGBA" and look.size == (224, 160)
        alpha = np.asarray(look)[..., 3]
    assert (alpha[nodata] == 0).all() and (alpha[~nodata] == 255).all()
    with rasterio.open(quicklook_path(out)) as look, rasterio.open(s2_raster) as src:  # lands on the raster
        assert look.crs == src.crs and look.transform == src.transform
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.quicklook.png", "e.quicklook.png.aux.xml", "e.tif"]
    assert [p.name for p in output_files(out)] == ["e.tif", "e.quicklook.png", "e.quicklook.png.aux.xml"]


def test_large_quicklook_is_georeferenced_at_its_step(tmp_path, tiny_model):
    """A quicklook keeps every step-th pixel; its transform has pixels step times larger from the same origin."""
    from engine.pipeline.raster import Quicklook

    transform = rasterio.transform.from_origin(500000.0, 4500000.0, 10.0, 10.0)
    look = Quicklook(2500, 1200, np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32), True)
    assert look.step == 3 and look.image.shape[:2] == (834, 400)
    look.save(tmp_path / "q.png", "EPSG:32633", transform)
    with rasterio.open(tmp_path / "q.png") as ds:
        assert ds.crs.to_epsg() == 32633 and ds.transform == rasterio.transform.from_origin(500000.0, 4500000.0,
                                                                                          30.0, 30.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.png", "q.png.aux.xml"]


def test_coarse_pixels_follow_the_fine_field(tmp_path, s2_raster, tiny_model):
    fine = _read(embed_raster(s2_raster, tmp_path / "f.tif", tiny_model, dtype="float32", quicklook=False))
    out = embed_raster(s2_raster, tmp_path / "c.tif", tiny_model, pixel_size_m=40, dtype="float32", quicklook=False)
    with rasterio.open(out) as ds:
        assert (ds.width, ds.height, ds.res) == (56, 40, (40.0, 40.0))
        coarse = ds.read()
    # a 40 m pixel centre sits on the corner of 4 x 4 fine pixels: compare with the mean of the 2 x 2 around it
    around = fine[:, 1::4, 1::4][:, :40, :56] + fine[:, 2::4, 1::4] + fine[:, 1::4, 2::4] + fine[:, 2::4, 2::4]
    ok = np.isfinite(coarse).all(axis=0) & np.isfinite(around).all(axis=0)
    rel = np.linalg.norm(coarse[:, ok] - around[:, ok] / 4) / np.linalg.norm(coarse[:, ok])
    assert rel < 0.15


def test_coarser_input_is_resampled_to_the_crop_ground_size(tmp_path, tiny_model, monkeypatch):
    data = synthetic_s2(48, 80, seed=6)
    src = write_raster(tmp_path / "s20.tif", data, transform=from_origin(500000.0, 4500000.0, 20.0, 20.0))
    shapes, original = [], raster_module.SourceRaster.read

    def spy(self, window, out_shape=None):
        data, valid = original(self, window, out_shape)
        shapes.append(data.shape)
        return data, valid

    monkeypatch.setattr(raster_module.SourceRaster, "read", spy)
    out = embed_raster(src, tmp_path / "e20.tif", tiny_model, quicklook=False)
    with rasterio.open(out) as ds:
        assert (ds.width, ds.height, ds.res) == (80, 48, (20.0, 20.0)) and np.isfinite(ds.read()).all()
    assert set(shapes) == {(10, CROP, CROP)}  # 32 pixels of 20 m read as 64 of 10 m: the model's crop


def test_pca_int16_matches_projected_full_field(tmp_path, s2_raster, tiny_model):
    full = _read(embed_raster(s2_raster, tmp_path / "full.tif", tiny_model, dtype="float32", quicklook=False))
    out = embed_raster(s2_raster, tmp_path / "pca.tif", tiny_model, dims=4, dtype="int16")
    with EmbeddingRaster(out) as er:
        assert er.int16 and er.dims == 4 and er.meta.model_dims == 32
        assert er.meta.space == EmbeddingSpace(tiny_model.fingerprint, "nili", "released", er.pca.sha)
        reduced = er.read_block(rasterio.windows.Window(0, 0, 224, 160))
        valid = np.isfinite(full).all(axis=0)
        projected = er.project(full[:, valid].T).T
    assert (tmp_path / "pca.pca.npz").is_file()
    scale = np.abs(projected).max(axis=1, keepdims=True)
    np.testing.assert_allclose(reduced[:, valid] / scale, projected / scale, atol=2e-3)
    assert np.isnan(reduced[:, ~valid]).all()


def test_cancel_stops_and_leaves_no_file(tmp_path, s2_raster, tiny_model):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    calls, fractions = [], []
    with pytest.raises(Cancelled):
        embed_raster(s2_raster, out_dir / "x.tif", tiny_model, dims=4, batch_size=2,
                     cancel=lambda: calls.append(1) or len(calls) > 3, progress=fractions.append)
    assert list(out_dir.iterdir()) == []
    assert len(fractions) <= 2  # stopped within a batch of the request
    fractions.clear()
    embed_raster(s2_raster, out_dir / "y.tif", tiny_model, dims=4, progress=fractions.append)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_bad_inputs_are_clear_errors(tmp_path, tiny_model):
    data = synthetic_s2(70, 70)
    with pytest.raises(GAIRError, match="no CRS.*assign one"):
        embed_raster(write_raster(tmp_path / "nocrs.tif", data, crs=None), tmp_path / "a.tif", tiny_model)
    four = write_raster(tmp_path / "rgbn.tif", data[[1, 2, 3, 7]], descriptions=("B2", "B3", "B4", "B8"))
    with pytest.raises(GAIRError, match="bands B2, B3, B4, B8 .* missing B5"):
        embed_raster(four, tmp_path / "b.tif", tiny_model)
    with pytest.raises(GAIRError, match="only nodata"):
        embed_raster(write_raster(tmp_path / "empty.tif", np.zeros_like(data)), tmp_path / "c.tif", tiny_model)
    with pytest.raises(GAIRError, match="dims must be at least 1"):
        embed_raster(write_raster(tmp_path / "ok.tif", data), tmp_path / "d.tif", tiny_model, dims=-1)
    with pytest.raises(GAIRError, match="too coarse"):
        embed_raster(tmp_path / "ok.tif", tmp_path / "e.tif", tiny_model, pixel_size_m=200)
    with pytest.raises(GAIRError, match="transformer per pixel"):
        embed_raster(tmp_path / "ok.tif", tmp_path / "f.tif", tiny_model, mode="transformer")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.tif", "nocrs.tif", "ok.tif", "rgbn.tif"]


def test_real_samples(tmp_path, samples_dir, tiny_model):
    for city in ("detroit", "sacramento", "tokyo"):
        src = samples_dir / f"{city}_rs.tif"
        out = embed_raster(src, tmp_path / f"{city}.tif", tiny_model, dims=3, quicklook=False)
        with rasterio.open(out) as ds, rasterio.open(src) as inp:
            assert ds.crs == inp.crs and ds.transform == inp.transform and ds.count == 3
            assert np.isfinite(ds.read()[:, inp.read(2) > 0]).all()


def test_peak_memory_does_not_grow_with_the_raster(tmp_path, monkeypatch):
    """Python-side peak (numpy buffers, token/field caches) for 4x the pixels stays flat: blocks, not rasters.

    The quicklook (at most 1024 px a side) is left out: it is capped, not constant, and small rasters show its growth.
    """
    torch.manual_seed(0)
    model = engine.GAIRModel(engine.GAIRConfig.tiny(crop_pixels=128)).eval()  # fewer crops, same code path
    monkeypatch.setattr(raster_module, "BLOCK_BUDGET_BYTES", 1)  # one-tile blocks: 2 blocks vs 8 blocks
    sources = [write_raster(tmp_path / f"m{h}.tif", synthetic_s2(h, w, seed=3)) for h, w in ((256, 512), (512, 1024))]
    embed_raster(sources[0], tmp_path / "warm_up.tif", model, dims=4)  # imports and first-call caches
    peaks = []
    for src in sources:
        tracemalloc.start()
        embed_raster(src, src.with_name(src.stem + "_out.tif"), model, dims=4, batch_size=2, quicklook=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.2 * peaks[0], peaks


def test_every_valid_pixel_beside_a_nodata_wedge_gets_an_embedding(tmp_path, tiny_model):
    """A swath edge (nodata wedge): by default every crop with a valid pixel is encoded, and the nodata-only crops
    beside them too (their cells are read by valid pixels near the joint); min_valid 0.5 leaves pixels without one."""
    data = synthetic_s2(256, 256, seed=2)
    rows, cols = np.mgrid[0:256, 0:256]
    data[:, cols > rows * 0.6 + 70] = 0
    src = write_raster(tmp_path / "wedge.tif", data)
    valid = (data != 0).any(axis=0)
    for min_valid, lost in ((None, False), (0.5, True)):
        kwargs = {} if min_valid is None else {"min_valid": min_valid}
        field = _read(embed_raster(src, tmp_path / f"w{min_valid}.tif", tiny_model, dtype="float32",
                                   quicklook=False, **kwargs))[0]
        assert np.isnan(field[~valid]).all()
        assert (~np.isfinite(field[valid])).any() == lost
