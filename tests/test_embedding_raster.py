"""Embedding raster format: round trips, tags, int16 scaling, PCA sidecar, atomic writes, space identity, kinds."""
from __future__ import annotations

import numpy as np
import pytest
from rasterio.transform import from_origin
from rasterio.windows import Window

from engine import Cancelled, GAIRError
from engine.io.embedding_raster import (
    INT8_NODATA,
    INT16_NODATA,
    EmbeddingRaster,
    band_names,
    sample_pixels,
)
from engine.io.embedding_writer import EmbeddingRasterWriter, int16_scale_offset
from engine.io.files import output_files, pca_sidecar_path
from engine.io.pca import PCAProjection
from engine.io.quantise import quantise_int8, quantise_int16
from engine.io.space import EmbeddingSpace, check_same_space

H, W, K = 70, 90, 6
TRANSFORM = from_origin(500000.0, 4100000.0, 10.0, 10.0)


def _data(seed: int = 0, dims: int = K) -> np.ndarray:
    data = np.random.default_rng(seed).normal(size=(dims, H, W)).astype(np.float32)
    data[:, :5, :7] = np.nan  # a nodata corner
    return data


def _write(path, data, **kwargs):
    kw = {"width": W, "height": H, "crs": "EPSG:32633", "transform": TRANSFORM, "dims": data.shape[0],
          "model": "abc123", "crop_pixels": 224, "crop_ground_m": 2240.0, "tile": 32}
    kw.update(kwargs)
    with EmbeddingRasterWriter(path, **kw) as writer:
        for r in range(0, H, 32):  # windows that do not match the tiles, to test partial writes
            writer.write(Window(0, r, W, min(32, H - r)), data[:, r:r + 32])
    return path


def test_float32_round_trip_and_tags(tmp_path):
    data = _data()
    path = _write(tmp_path / "e.tif", data)
    with EmbeddingRaster(path) as er:
        meta = er.meta
        assert meta.space == EmbeddingSpace("abc123", "nili", "released") and (meta.dims, meta.model_dims) == (K, K)
        assert (meta.crop_pixels, meta.crop_ground_m, meta.pca_file) == (224, 2240.0, "")
        tags = er._ds.tags()
        assert tags["GAIR_KIND"] == "embedding" and tags["GAIR_SPACE"] == meta.space.id
        assert (tags["GAIR_MODEL"], tags["GAIR_QUERY_MODE"], tags["GAIR_NILI_CONVENTION"]) == ("abc123", "nili",
                                                                                               "released")
        assert er.crs.to_epsg() == 32633 and er.transform == TRANSFORM and np.isnan(er.nodata)
        assert list(er._ds.descriptions) == band_names(K) and er.tile_shape == (32, 32)
        full = np.full_like(data, np.nan)
        for window, block in er.iter_blocks():
            assert block.dtype == np.float32 and window.col_off % 32 == 0 and window.row_off % 32 == 0
            full[:, window.row_off:window.row_off + window.height, window.col_off:window.col_off + window.width] = block
        np.testing.assert_array_equal(full, data)
        win = Window(10, 20, 30, 15)
        pixels = er.read_pixels(win)
        assert pixels.flags.c_contiguous and pixels.shape == (15 * 30, K)
        np.testing.assert_array_equal(pixels, data[:, 20:35, 10:40].reshape(K, -1).T)
    assert [p.name for p in tmp_path.iterdir()] == ["e.tif"]  # no temp files left


def test_int16_scaled_round_trip(tmp_path):
    data = _data(1) * 3 + 5
    scale, offset = int16_scale_offset(data.reshape(K, -1).T)
    path = _write(tmp_path / "q.tif", data, dtype="int16", scale=scale, offset=offset)
    with EmbeddingRaster(path) as er:
        assert er.int16 and er.nodata == INT16_NODATA
        block = er.read_block(Window(0, 0, W, H))
        assert block.dtype == np.float32
        assert np.array_equal(np.isnan(block), np.isnan(data))
        err = np.nanmax(np.abs(block - data))
        assert err <= scale.max() * 0.51 + 1e-6 and err < 1e-3
        np.testing.assert_allclose(er.read_pixels(Window(0, 0, W, H)), block.reshape(K, -1).T)
    with pytest.raises(GAIRError, match="scale"):
        EmbeddingRasterWriter(tmp_path / "x.tif", width=4, height=4, crs="EPSG:4326", transform=TRANSFORM, dims=2,
                              model="m", dtype="int16")


def test_pca_sidecar_space_and_projection(tmp_path):
    rng = np.random.default_rng(2)
    vectors = (rng.normal(size=(500, 16)) * np.linspace(5, 0.1, 16)).astype(np.float32)
    pca = PCAProjection.from_sample(vectors, 4, model="fp1", seed=0)
    assert len(pca.sha) == 16 and pca.explained_variance_ratio[0] > pca.explained_variance_ratio[-1]
    reduced = pca.transform(vectors)
    data = np.full((4, H, W), np.nan, np.float32)
    data[:, :5, :100] = reduced[: 5 * W].T.reshape(4, 5, W)
    path = _write(tmp_path / "p.tif", data, pca=pca, model="fp1")
    side = pca_sidecar_path(path)
    assert side.name == "p.pca.npz" and side.is_file()
    with EmbeddingRaster(path) as er:
        assert er.meta.space.pca == pca.sha and er.meta.pca_file == "p.pca.npz" and er.meta.model_dims == 16
        assert er._ds.tags()["GAIR_PCA_SHA"] == pca.sha and er.pca.sha == pca.sha
        np.testing.assert_allclose(er.project(vectors[:3]), reduced[:3], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(er.project(reduced[:3]), reduced[:3])  # already in raster space
        with pytest.raises(GAIRError, match="dims"):
            er.project(np.zeros((1, 7)))
        full = _write(tmp_path / "f.tif", _data(3, 16), model="fp1")
        with EmbeddingRaster(full) as ef:
            np.testing.assert_array_equal(ef.project(vectors[:2]), vectors[:2])
            with pytest.raises(GAIRError, match=f"PCA projection {pca.sha} vs none"):
                check_same_space(er, ef)
            check_same_space(er, ef, ignore_pca=True)
        check_same_space(er, EmbeddingSpace("fp1", "nili", "released", pca.sha))
    side.unlink()
    with pytest.raises(GAIRError, match="sidecar"):
        EmbeddingRaster(path)


def test_abort_and_cancel_leave_nothing(tmp_path):
    kw = {"width": W, "height": H, "crs": "EPSG:4326", "transform": TRANSFORM, "dims": 2, "model": "m"}
    with pytest.raises(Cancelled), EmbeddingRasterWriter(tmp_path / "c.tif", **kw) as writer:
        writer.write(Window(0, 0, W, H), np.zeros((2, H, W), np.float32))
        raise Cancelled("stop")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(GAIRError, match="block shape"), EmbeddingRasterWriter(tmp_path / "c.tif", **kw) as writer:
        writer.write(Window(0, 0, W, H), np.zeros((3, H, W), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_not_an_embedding_raster(tmp_path):
    import rasterio

    path = tmp_path / "plain.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1, dtype="float32", crs="EPSG:4326",
                       transform=TRANSFORM) as ds:
        ds.write(np.zeros((1, 4, 4), np.float32))
    with pytest.raises(GAIRError, match="not a GAIR embedding raster"):
        EmbeddingRaster(path)


def test_sample_pixels_valid_distinct_seeded(tmp_path):
    data = _data(4)
    path = _write(tmp_path / "s.tif", data)
    with EmbeddingRaster(path) as er:
        vec, rows, cols = sample_pixels(er, 200, seed=7)
        _, rows2, cols2 = sample_pixels(er, 200, seed=7)
        _, rows3, _ = sample_pixels(er, 200, seed=8)
        everything, _, _ = sample_pixels(er, 10**6, seed=0)
    assert vec.shape == (200, K) and np.isfinite(vec).all()
    assert np.array_equal(rows, rows2) and np.array_equal(cols, cols2) and not np.array_equal(rows, rows3)
    assert len(set(zip(rows.tolist(), cols.tolist()))) == 200
    np.testing.assert_array_equal(vec, data[:, rows, cols].T)
    assert everything.shape[0] == H * W - 35


def test_space_identity_names_what_differs():
    base = EmbeddingSpace("fp1", "nili", "released")
    assert base.id == EmbeddingSpace("fp1", "nili", "released").id and base.id.startswith("fp1-")
    variants = {"query mode nili vs bilinear": EmbeddingSpace("fp1", "bilinear", "released"),
                "NILI convention released vs legacy": EmbeddingSpace("fp1", "nili", "legacy"),
                "model fp1 vs fp2": EmbeddingSpace("fp2", "nili", "released"),
                "PCA projection none vs ab12": EmbeddingSpace("fp1", "nili", "released", "ab12"),
                "option tile none vs 7": EmbeddingSpace("fp1", "nili", "released", options={"tile": "7"})}
    for words, other in variants.items():
        assert other.id != base.id
        with pytest.raises(GAIRError, match=words):
            check_same_space(base, other)
    photos = EmbeddingSpace("fp1")  # no raster query: compares with any query mode of the same model
    check_same_space(photos, base)
    assert EmbeddingSpace.from_tags(variants["option tile none vs 7"].tags(), "x") == variants["option tile none vs 7"]
    edited = dict(base.tags(), GAIR_QUERY_MODE="bicubic")
    with pytest.raises(GAIRError, match="does not match"):
        EmbeddingSpace.from_tags(edited, "x.tif")


def test_raster_refuses_a_pca_sidecar_of_another_run(tmp_path):
    """Rename a raster, embed another one to the old name: the renamed raster must not take the new sidecar."""
    rng = np.random.default_rng(5)
    first = PCAProjection.from_sample(rng.normal(size=(300, 16)).astype(np.float32), 4, model="fp1")
    second = PCAProjection.from_sample(rng.normal(size=(300, 16)).astype(np.float32), 4, model="fp1")
    assert first.sha != second.sha
    _write(tmp_path / "a.tif", _data(6, 4), pca=first, model="fp1")
    (tmp_path / "a.tif").rename(tmp_path / "b.tif")
    _write(tmp_path / "a.tif", _data(7, 4), pca=second, model="fp1")
    with pytest.raises(GAIRError, match="a.pca.npz belongs to another embedding run"):
        EmbeddingRaster(tmp_path / "b.tif")
    with EmbeddingRaster(tmp_path / "a.tif") as er:
        assert er.pca.sha == second.sha
    first.save(tmp_path / "b.pca.npz")  # the raster's own projection beside it under its new name: accepted
    with EmbeddingRaster(tmp_path / "b.tif") as er:
        assert er.pca.sha == first.sha


def test_output_files_lists_raster_sidecars_and_quicklook(tmp_path):
    path = tmp_path / "e.tif"
    names = ["e.tif", "e.tif.aux.xml", "e.tif-wal", "e.tif-shm", "e.tif-journal", "e.pca.npz", "e.quicklook.png",
             "e.quicklook.png.aux.xml"]
    assert [p.name for p in output_files(path, existing_only=False)] == names
    rng = np.random.default_rng(1)
    pca = PCAProjection.from_sample(rng.normal(size=(100, 8)).astype(np.float32), 4, model="m")
    _write(path, _data(1, 4), pca=pca, model="m")
    (tmp_path / "other.tif").write_bytes(b"")
    assert [p.name for p in output_files(path)] == ["e.tif", "e.pca.npz"]


def test_int8_round_trip_unit_vectors_within_the_cosine_bound(tmp_path):
    """int8 stores unit vectors x127: reading gives unit vectors whose cosine to the originals is >= 1 - 1e-3
    (rounding moves each component by <= 0.5/127), -128 in every band at nodata, the encoding in the tags."""
    data = _data(dims=16)
    data[:, 40, 50] = 0.0  # a zero vector has no direction: stored as nodata
    path = _write(tmp_path / "q8.tif", data, dtype="int8")
    with EmbeddingRaster(path) as er:
        assert er.dtype == "int8" and er.nodata == INT8_NODATA and er._ds.tags()["GAIR_ENCODING"] == "int8_unit"
        assert er._ds.compression is None  # plain tiles by default (read through mmap)
        raw = er.read_raw(Window(0, 0, W, H))
        block = er.read_block(Window(0, 0, W, H))
        pixels = er.read_pixels(Window(0, 0, W, H))
        mask = er.read_valid_mask(Window(0, 0, W, H))
    assert raw.dtype == np.int8 and raw.min() >= INT8_NODATA and raw[raw != INT8_NODATA].min() >= -127
    invalid = ~np.isfinite(data).all(axis=0) | (np.abs(data).sum(axis=0) == 0)
    assert (raw[:, invalid] == INT8_NODATA).all() and not (raw[:, ~invalid] == INT8_NODATA).all(axis=0).any()
    np.testing.assert_array_equal(mask, ~invalid)
    assert np.isnan(block[:, invalid]).all() and np.isfinite(block[:, ~invalid]).all()
    got, want = block[:, ~invalid], data[:, ~invalid]
    norms = np.linalg.norm(got, axis=0)
    assert np.abs(norms - 1).max() < 0.02
    cosine = (got * want).sum(axis=0) / norms / np.linalg.norm(want, axis=0)
    assert cosine.min() > 1 - 1e-3 and np.median(cosine) > 1 - 2e-4
    np.testing.assert_array_equal(pixels, block.reshape(16, -1).T)
    # the raw values are the rounded scaled unit vector, exactly
    expected = np.clip(np.rint(want / np.linalg.norm(want, axis=0) * 127), -127, 127)
    np.testing.assert_array_equal(raw[:, ~invalid], expected)
    np.testing.assert_array_equal(quantise_int8(data)[:, ~invalid], expected)


def test_int8_blocks_raw_and_chunked_floats(tmp_path):
    """iter_blocks(raw=True) yields the stored int8 values; to_float(unit=False) is the same direction x127."""
    data = _data(dims=8)
    path = _write(tmp_path / "q8.tif", data, dtype="int8")
    with EmbeddingRaster(path) as er:
        raws = [(window, raw.copy()) for window, raw in er.iter_blocks(32, raw=True)]
        blocks = [block.copy() for _, block in er.iter_blocks(32)]
        assert len(raws) == len(blocks) > 1
        for (_, raw), block in zip(raws, blocks):
            assert raw.dtype == np.int8
            raw_cols = raw.reshape(8, -1).copy()
            unit = er.to_float(raw_cols)
            scaled = er.to_float(raw_cols, unit=False)
            np.testing.assert_array_equal(unit, block.reshape(8, -1))
            np.testing.assert_allclose(scaled, unit * 127, rtol=1e-6, equal_nan=True)


def test_int8_written_as_signed_bytes_by_an_older_gdal_reads_the_same(tmp_path):
    """GDAL < 3.7 (QGIS 3.22) stores int8 as Byte: the reader takes the GAIR_ENCODING tag and views the bytes as
    signed, so both files give the same vectors and the same nodata."""
    import rasterio

    data = _data(dims=4)
    path = _write(tmp_path / "q8.tif", data, dtype="int8")
    with rasterio.open(path) as src:
        raw, profile, tags = src.read(), src.profile, src.tags()
    profile.update(dtype="uint8", nodata=128)
    with rasterio.open(tmp_path / "bytes.tif", "w", **profile) as dst:
        dst.write(raw.view(np.uint8))
        dst.update_tags(**tags)
    window = Window(0, 0, W, H)
    with EmbeddingRaster(path) as a, EmbeddingRaster(tmp_path / "bytes.tif") as b:
        assert b.dtype == "int8" and b._ds.dtypes[0] == "uint8"
        np.testing.assert_array_equal(b.read_raw(window), raw)
        np.testing.assert_array_equal(b.read_block(window), a.read_block(window))
        np.testing.assert_array_equal(b.read_valid_mask(window), a.read_valid_mask(window))


def _quantise_int8_reference(block):
    """The first int8 encoder (whole-block nan_to_num): the bytes the fast one must keep."""
    block = np.asarray(block, np.float32)
    norms = np.sqrt(np.einsum("k...,k...->...", block, block))
    invalid = ~(np.isfinite(norms) & (norms > 0))
    scaled = block * (127 / np.where(invalid, 1.0, norms))
    raw = np.clip(np.rint(np.nan_to_num(scaled)), -127, 127).astype(np.int8)
    raw[:, invalid] = INT8_NODATA
    return raw


def _quantise_int16_reference(block, offset, scale):
    invalid = ~np.isfinite(block).all(axis=0)
    raw = np.rint((block - offset[:, None, None]) / scale[:, None, None])
    raw = np.clip(np.nan_to_num(raw), -32767, 32767).astype(np.int16)
    raw[:, invalid] = INT16_NODATA
    return raw


def _awkward_block(seed: int = 3, dims: int = 16) -> np.ndarray:
    """Ordinary vectors plus every awkward pixel: NaN in one or all bands, +-inf, zero, lengths that overflow
    float32 when squared, tiny and subnormal components (squares that underflow), ties at .5 after scaling."""
    rng = np.random.default_rng(seed)
    block = rng.normal(size=(dims, 24, 40)).astype(np.float32)
    block[:, 0, 0] = np.nan
    block[3, 0, 1] = np.nan
    block[5, 0, 2], block[6, 0, 3] = np.inf, -np.inf
    block[:, 0, 4] = 0.0
    block[:, 0, 5] = 1e20  # |v|^2 overflows: nodata
    block[:, 0, 6] = rng.normal(size=dims) * 3e18  # large but finite length
    block[:, 0, 7] = rng.normal(size=dims) * 1e-20  # squares are subnormal
    block[:, 0, 8], block[0, 0, 8] = 0.0, 1e-38  # tiny length
    block[:, 0, 9], block[0, 0, 9] = 0.0, 1e-44  # subnormal: its square underflows to 0
    block[:, 0, 10], block[0, 0, 10], block[1, 0, 10] = 0.0, 4e-37, 1e-45
    block[:, 0, 11], block[0, 0, 11] = 0.0, -2.5  # a lone component: exactly -127
    block[:, 0, 12], block[2, 0, 12] = 0.0, -1.2e-22  # its subnormal square gives |v| < |component|: clipped
    block[:, 1, :] = rng.integers(-3, 4, size=(dims, 40)).astype(np.float32) * 0.5  # many ties
    return block


@pytest.mark.parametrize("layout", ["band-major", "pixel-major"])
def test_fast_quantisers_keep_the_bytes_of_the_first_ones(tmp_path, layout):
    """The writer's in-place int8/int16 encoders (reused buffers, NaN cleaning only where it can matter) give the
    same bytes as the first whole-block implementations, on every awkward pixel, for a (K, h, w) array and for the
    blender's (h, w, K) sums seen as (K, h, w), and through the file too."""
    block = _awkward_block()
    if layout == "pixel-major":
        block = np.ascontiguousarray(block.transpose(1, 2, 0)).transpose(2, 0, 1)
    want8 = _quantise_int8_reference(block)
    nodata = (want8 == INT8_NODATA).all(axis=0)
    assert nodata[0, :11].tolist() == [True] * 6 + [False, False, True, True, True] and nodata.sum() == 9
    assert want8[2, 0, 12] == -127 and want8[0, 0, 11] == -127
    np.testing.assert_array_equal(quantise_int8(block), want8)
    out, scratch = np.full(block.size + 7, 99, np.int8), np.full(block.size + 5, 7.0, np.float32)
    np.testing.assert_array_equal(quantise_int8(block, out, scratch), want8)
    np.testing.assert_array_equal(quantise_int8(block[:, :5], out, scratch), want8[:, :5])  # reused, smaller
    np.testing.assert_array_equal(quantise_int8(block[:, :, :7]), _quantise_int8_reference(block[:, :, :7]))
    large = np.random.default_rng(5).normal(size=(16, 150, 170)).astype(np.float32)  # casts in several chunks
    large[:, 140:, 150:] = np.nan
    large = np.ascontiguousarray(large.transpose(1, 2, 0)).transpose(2, 0, 1) if layout == "pixel-major" else large
    np.testing.assert_array_equal(quantise_int8(large), _quantise_int8_reference(large))
    lo, hi = np.full(16, -0.1), np.full(16, 0.05)
    np.testing.assert_array_equal(quantise_int16(large, lo, hi), _quantise_int16_reference(large, lo, hi))
    scale, offset = int16_scale_offset(block[:, 2:].reshape(16, -1).T)
    want16 = _quantise_int16_reference(block, offset, scale)
    np.testing.assert_array_equal(quantise_int16(block, offset, scale), want16)
    np.testing.assert_array_equal(quantise_int16(block, offset, scale, np.zeros(block.size, np.int16),
                                                 np.zeros(block.size, np.float64)), want16)
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero scale: NaN/inf anywhere, cleaned as before
        np.testing.assert_array_equal(quantise_int16(block, offset, np.zeros(16)),
                                      _quantise_int16_reference(block, offset, np.zeros(16)))
    dims, h, w = block.shape
    for dtype, want, kw in (("int8", want8, {}), ("int16", want16, {"scale": scale, "offset": offset})):
        path = tmp_path / f"{dtype}.tif"
        with EmbeddingRasterWriter(path, width=w, height=h, crs="EPSG:32633", transform=TRANSFORM, dims=dims,
                                   model="abc123", dtype=dtype, tile=16, **kw) as writer:
            writer.write(Window(0, 0, w, 8), block[:, :8])
            writer.write(Window(0, 8, w, h - 8), block[:, 8:])
        with EmbeddingRaster(path) as er:
            np.testing.assert_array_equal(er.read_raw(Window(0, 0, w, h)), want)


def test_int8_of_a_float64_block_is_that_of_its_float32_values():
    block = _awkward_block()
    np.testing.assert_array_equal(quantise_int8(block.astype(np.float64)), _quantise_int8_reference(block))
