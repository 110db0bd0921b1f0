"""Seamless to the scene edge, whatever the extent: crops anchored to the raster, context read past the extent and
mirrored past the scene edge, the seam figure (issue 13; the lattice's geometry: tests/test_pipeline_tiling.py)."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

import engine
from engine.pipeline import embed_raster
from engine.pipeline.quality import raster_seam_figure, seam_figure, step_profile
from engine.pipeline.source import SourceRaster
from tests.golden import REFERENCE, golden_state_dict
from tests.test_pipeline_raster import crop_by_crop_field, synthetic_s2, write_raster

SAMPLES = REFERENCE.parents[2] / "data" / "samples"
ORIGIN_X, ORIGIN_Y = 500000.0, 4500000.0  # write_raster's default transform: 10 m pixels from here


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return engine.GAIRModel(engine.GAIRConfig.tiny()).eval()


@pytest.fixture(scope="module")
def golden_model():
    """The official-size model with the golden test's deterministic weights (no 800 MB checkpoint on disk)."""
    from engine.model.checkpoint import apply_state_dict

    model = engine.GAIRModel(engine.GAIRConfig())
    report = apply_state_dict(model, {k: torch.from_numpy(v) for k, v in golden_state_dict().items()}, "golden")
    assert report.loaded == len(model.state_dict())
    return model.eval()


@pytest.fixture(scope="module")
def s2_raster(tmp_path_factory):
    return write_raster(tmp_path_factory.mktemp("seamless") / "s2.tif", synthetic_s2(200, 260, seed=3))


def _embed(src, out, model, **kwargs) -> tuple[np.ndarray, rasterio.Affine]:
    path = embed_raster(src, out, model, dims=0, dtype="float32", quicklook=False, **kwargs)
    with rasterio.open(path) as ds:
        return ds.read(), ds.transform


def _rel_err(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(got - expected) / np.linalg.norm(expected))


@pytest.mark.parametrize("pixel_size", [None, 20.0])
@pytest.mark.parametrize("box", [(37, 23, 151, 119), (150, 120, 260, 200), (0, 0, 41, 29)],
                         ids=["inside", "corner", "origin"])
def test_a_sub_extent_reproduces_the_whole_raster_there(tmp_path, s2_raster, tiny_model, box, pixel_size):
    whole, whole_t = _embed(s2_raster, tmp_path / "whole.tif", tiny_model, pixel_size_m=pixel_size)
    c0, r0, c1, r1 = box  # input pixel columns/rows
    extent = (ORIGIN_X + c0 * 10, ORIGIN_Y - r1 * 10, ORIGIN_X + c1 * 10, ORIGIN_Y - r0 * 10)
    part, part_t = _embed(s2_raster, tmp_path / "part.tif", tiny_model, pixel_size_m=pixel_size, extent=extent)
    # the part's pixels are pixels of the whole raster's grid (anchored at the raster's origin)
    col, row = ~whole_t * (part_t.c, part_t.f)
    assert (col, row) == (round(col), round(row)) and part_t.a == whole_t.a
    expected = whole[:, round(row):round(row) + part.shape[1], round(col):round(col) + part.shape[2]]
    assert part.shape == expected.shape and np.isfinite(part).all()
    assert _rel_err(part, expected) <= 1e-3


def test_reads_past_the_extent_see_the_raster_and_past_the_scene_a_mirror(s2_raster, tiny_model):
    cfg = tiny_model.config
    with rasterio.open(s2_raster) as ds:
        raw = ds.read([2, 3, 4, 5, 6, 7, 8, 9, 11, 12]).astype(np.float32)
    with SourceRaster(s2_raster, cfg, extent=(ORIGIN_X + 500, ORIGIN_Y - 1000, ORIGIN_X + 1000, ORIGIN_Y - 500)) as src:
        assert (src.area.col_off, src.area.row_off, src.width, src.height) == (50, 50, 50, 50)
        data, valid = src.read(Window(-20, -30, 64, 64))  # extent-relative: input columns 30..94, rows 20..84
        np.testing.assert_array_equal(data, raw[:, 20:84, 30:94])
        data, valid = src.read(Window(-80, -60, 64, 64))  # input columns -30..34, rows -10..54: mirrored
        np.testing.assert_array_equal(data, np.pad(raw[:, :54, :34], ((0, 0), (10, 0), (30, 0)), mode="reflect"))
        assert valid.all()


def test_border_of_the_raster_has_no_frame_with_official_size_weights(tmp_path, golden_model):
    """The real Detroit sample (246 x 181 px, smaller than one 224 px crop): the seam figure was 8.4 (rows) and 9.0
    (columns) when border crops saw only the raster and their border tokens NILI's zero padding; the lattice starts
    two cells before the raster, on mirrored scene."""
    out = embed_raster(SAMPLES / "detroit_rs.tif", tmp_path / "detroit.tif", golden_model, dims=0, dtype="float32",
                       quicklook=False)
    assert raster_seam_figure(out) <= 2.0  # 1.31 on the token lattice (4.25 with blended crop fields, issue 13)
    hard, _ = crop_by_crop_field(golden_model, SAMPLES / "detroit_rs.tif")
    assert seam_figure(hard) > 6.0  # crop-by-crop fields: the figure sees a seam when there is one


def test_seam_figure():
    rows, cols = np.mgrid[0:40, 0:50].astype(np.float32)
    ramp = np.stack([rows, cols])  # every step has length 1
    assert seam_figure(ramp) == pytest.approx(1.0)
    framed = ramp.copy()
    framed[0, :, :3] += 20.0  # a frame three pixels wide on the left
    assert seam_figure(framed) == pytest.approx(np.sqrt(20.0**2 + 1) / 1.0, rel=1e-5)
    assert step_profile(framed, 2).argmax() == 2
    framed[:, 5, 5] = np.nan  # nodata is ignored
    assert np.isfinite(step_profile(framed, 1)).all()


def _cog_errors(path) -> list[str]:
    """GDAL's own COG validator (osgeo_utils, from the GDAL Python bindings QGIS brings)."""
    from osgeo_utils.samples.validate_cloud_optimized_geotiff import validate

    warnings_, errors, _ = validate(str(path), full_check=True)
    return errors


def test_embedding_raster_is_a_cloud_optimized_geotiff(tmp_path, s2_raster, tiny_model):
    out = embed_raster(s2_raster, tmp_path / "e.tif", tiny_model, quicklook=False)  # int8, 260 x 200 px
    with rasterio.open(out) as ds:
        assert ds.profile["tiled"] and ds.block_shapes[0] == (256, 256)
        assert ds.overviews(1) == []  # under a megapixel: nothing to gain
    assert _cog_errors(out) == []
    assert [p.name for p in tmp_path.iterdir()] == ["e.tif"]  # no staging file left


@pytest.mark.parametrize("dtype", ["float32", "int16", "int8"])
def test_overviews_hold_stored_vectors_and_nodata(tmp_path, dtype):
    """Nearest overviews: every overview pixel is one of the stored vectors of its block (never a blend, so an
    int8 vector stays unit length), and nodata stays nodata."""
    from engine.io.embedding_raster import EmbeddingRaster
    from engine.io.embedding_writer import EmbeddingRasterWriter

    rng = np.random.default_rng(0)
    field = rng.standard_normal((4, 1100, 1040)).astype(np.float32)
    field[:, :548, :520] = np.nan  # nodata quarter
    kwargs = dict(scale=0.001, offset=0.0) if dtype == "int16" else {}
    with EmbeddingRasterWriter(tmp_path / "o.tif", width=1040, height=1100, crs="EPSG:32633", dims=4, model="m",
                               transform=rasterio.transform.from_origin(0, 0, 10, 10), dtype=dtype,
                               **kwargs) as writer:
        writer.write(Window(0, 0, 1040, 1100), field)
    with rasterio.open(tmp_path / "o.tif") as ds:
        assert ds.overviews(1) == [4, 16]
    assert _cog_errors(tmp_path / "o.tif") == []  # IFDs first, then the overviews, then the full resolution
    with rasterio.open(tmp_path / "o.tif", OVERVIEW_LEVEL=0) as ds:
        quarter = ds.read().astype(np.float64)
    with EmbeddingRaster(tmp_path / "o.tif") as raster:
        stored = raster.read_raw(Window(0, 0, 1040, 1100)).astype(np.float64)
    nodata = {"float32": np.nan, "int16": -32768, "int8": -128}[dtype]
    valid = quarter[0] == quarter[0] if dtype == "float32" else quarter[0] != nodata
    assert not valid[:137, :130].any() and valid[137:, :].all() and valid[:, 130:].all()
    blocks = stored[:, 548:1096, 520:1040].reshape(4, 137, 4, 130, 4).transpose(1, 3, 2, 4, 0).reshape(137, 130,
                                                                                                       16, 4)
    picked = quarter[:, 137:274, 130:260].transpose(1, 2, 0)[:, :, None, :]
    assert (np.abs(blocks - picked).max(axis=3) == 0).any(axis=2).all()
