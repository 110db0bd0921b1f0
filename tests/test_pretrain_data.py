"""Synthetic world, manifest builder, dataset, augmentations and the resumable sampler."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import rasterio
import torch

from engine import S2_BANDS, GAIRConfig, GAIRError
from engine.io.vectors import read_point_table
from engine.pipeline.source import SourceRaster
from engine.pipeline.tiling import METRES_PER_DEGREE
from engine.pretrain.augment import (
    dihedral,
    random_resized_crop,
    rs_colour_jitter,
    sv_colour_jitter,
)
from engine.pretrain.build_dataset import build_manifest
from engine.pretrain.build_dataset import main as build_main
from engine.pretrain.config import DataSection
from engine.pretrain.data import EpochSampler, PretrainDataset
from engine.pretrain.manifest import read_manifest, write_manifest
from engine.pretrain.synthetic import CLASSES, WorldSpec, make_world
from engine.runtime.preprocess import preprocess_rs

TINY = GAIRConfig.tiny()
GROUND = TINY.crop_ground_m  # 640 m


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"), WorldSpec(size_px=192, n_photos=160, n_labels=40,
                                                                  outside_fraction=0.05, seed=3))


@pytest.fixture(scope="module")
def manifest(world):
    out = world.root / "manifest.csv"
    report = build_manifest([world.raster], read_point_table(world.photos_csv), out, GROUND, seed=0)
    return out, report


def test_world_is_deterministic_and_mixed(world, tmp_path):
    again = make_world(tmp_path, world.spec)
    with rasterio.open(world.raster) as a, rasterio.open(again.raster) as b:
        assert a.count == 10 and a.crs.to_epsg() == 32632 and a.nodata == 0
        assert np.array_equal(a.read(), b.read())
        data = a.read()
    assert (data == 0).all(axis=0).any(), "the nodata corner is missing"
    cover = rasterio.open(world.landcover).read(1)
    shares = np.bincount(cover.ravel(), minlength=len(CLASSES)) / cover.size
    assert (shares > 0.05).all(), shares
    # the class mix shifts across the region: water dominates the north-west more than the south-east
    half = cover.shape[0] // 2
    assert (cover[:half, :half] == 0).mean() > 2 * (cover[half:, half:] == 0).mean()
    labels = list(csv.DictReader(world.labels_csv.read_text().splitlines()))
    pts = np.array([[float(r["lon"]), float(r["lat"])] for r in labels])
    assert [CLASSES[c] for c in world.class_at(pts)] == [r["label"] for r in labels]


def test_build_manifest_counts_and_geometry(world, manifest):
    out, report = manifest
    assert report.written + sum(report.skipped.values()) == world.spec.n_photos
    assert report.skipped["no_raster"] >= 1  # photos placed east of the raster
    samples = read_manifest(out)
    assert len(samples) == report.written
    with rasterio.open(world.raster) as ds:
        from pyproj import Transformer

        to_utm = Transformer.from_crs("EPSG:4326", ds.crs, always_xy=True)
        offsets = []
        for s in samples:
            col_off, row_off, w, h = s.window
            assert (w, h) == (64, 64)  # 640 m at 10 m
            x, y = to_utm.transform(s.lon, s.lat)
            col, row = ~ds.transform * (x, y)
            assert s.query_x == pytest.approx((col - col_off) / w, abs=1e-7)
            assert s.query_y == pytest.approx((row - row_off) / h, abs=1e-7)
            assert ds.read_masks(1, window=rasterio.windows.Window(*s.window)).min() == 255  # no nodata
            offsets.append((s.query_x, s.query_y))
    offsets = np.array(offsets)
    assert offsets.std(axis=0).min() > 0.2, "the photo point should sit anywhere in its crop, not at the centre"


def test_build_manifest_geographic_raster_and_gpkg(world, tmp_path):
    """A raster in EPSG:4326 and a GeoPackage photo table in UTM give crops of the same ground size."""
    import pyogrio.raw
    import shapely
    from pyproj import Transformer

    geo = make_world(tmp_path / "geo", WorldSpec(size_px=192, n_photos=40, n_labels=5, raster_crs="EPSG:4326", seed=3))
    rows = list(csv.DictReader(geo.photos_csv.read_text().splitlines()))
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True).transform(
        [float(r["lon"]) for r in rows], [float(r["lat"]) for r in rows])
    gpkg = geo.root / "photos.gpkg"
    pyogrio.raw.write(gpkg, shapely.to_wkb(shapely.points(x, y)), [np.array([r["path"] for r in rows], dtype=object)],
                      ["path"], geometry_type="Point", crs="EPSG:32632", driver="GPKG")
    points = read_point_table(gpkg)
    assert points[0]["lon"] == pytest.approx(float(rows[0]["lon"]), abs=1e-7)
    report = build_manifest([geo.raster], points, geo.root / "m.csv", GROUND, seed=0)
    samples = read_manifest(geo.root / "m.csv")
    assert report.written == len(samples) > 20
    for s in samples:
        assert s.bbox[0] <= s.lon <= s.bbox[2] and s.bbox[3] <= s.lat <= s.bbox[1]
        # the inference rule: degrees count as the equatorial degree, whatever the latitude
        assert (s.bbox[2] - s.bbox[0]) * METRES_PER_DEGREE == pytest.approx(GROUND, rel=0.02)
        assert (s.bbox[1] - s.bbox[3]) * METRES_PER_DEGREE == pytest.approx(GROUND, rel=0.02)


def test_build_dataset_cli_with_crop_files(world, tmp_path, capsys):
    out = tmp_path / "m.csv"
    args = ["--photos", str(world.photos_csv), "--out", str(out), "--crop-ground-m", "320"]
    assert build_main(["--rasters", str(world.root), *args]) == 2  # the folder also holds the 1-band land cover
    assert "landcover.tif: cannot tell which of the raster's 1 bands are which" in capsys.readouterr().err
    assert build_main(["--rasters", str(world.raster), *args, "--crops-dir", str(tmp_path / "crops")]) == 0
    assert "samples written" in capsys.readouterr().out
    samples = read_manifest(out)
    assert samples[0].window is None
    with rasterio.open(samples[0].rs_path) as crop:
        assert (crop.width, crop.height, crop.count) == (32, 32, 10)


def _write_s2(path, descriptions, lat: float, size: int = 160, seed: int = 0):
    """An EPSG:4326 raster of "10 m" (0.0000898 deg) pixels at latitude `lat`; each band its own random field
    within the model's scaling range (so a swapped band changes the model input)."""
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    data = np.stack([rng.integers(500 + 100 * k, 2500 + 100 * k, (size, size)) for k in range(len(descriptions))])
    res = 10.0 / METRES_PER_DEGREE
    profile = {"driver": "GTiff", "width": size, "height": size, "count": len(descriptions), "dtype": "uint16",
               "crs": "EPSG:4326", "transform": from_origin(10.0, lat + size * res / 2, res, res), "nodata": 0}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data.astype(np.uint16))
        ds.descriptions = tuple(descriptions)
    points = [{"lon": 10.0 + f * size * res, "lat": lat + (0.5 - g) * size * res, "path": "", "date": "", "label": ""}
              for f, g in ((0.3, 0.4), (0.5, 0.5), (0.7, 0.6), (0.45, 0.7))]
    return data, points


def _inference_crop(path, window) -> np.ndarray:
    """The crop as the embedding pipeline reads it (pipeline.raster: SourceRaster.read of the crop window)."""
    with SourceRaster(path, TINY) as src:
        assert (window[3], window[2]) == src.crop_size_px(src.output_grid().res_m)  # the pipeline's crop size
        return src.read(rasterio.windows.Window(*window))[0]


def test_high_latitude_geographic_crop_is_the_inference_crop(tmp_path):
    """At 65 N a 4326 raster of "10 m" pixels: pretraining cuts the 64 x 64 pixel crop inference cuts, and reads it
    the same (not a crop of 640 true metres, which would be 151 pixels wide there)."""
    raster = tmp_path / "north.tif"
    _, points = _write_s2(raster, S2_BANDS, lat=65.0)
    build_manifest([raster], points, tmp_path / "m.csv", GROUND, seed=0, require_photos=False)
    samples = read_manifest(tmp_path / "m.csv", require_photos=False)
    dataset = PretrainDataset(samples, TINY, train=False, photos=False)
    assert len(samples) == 4
    for i, sample in enumerate(samples):
        assert sample.window[2:] == (64, 64)
        expected = preprocess_rs(_inference_crop(raster, sample.window), TINY)[0]
        np.testing.assert_array_equal(dataset[i]["rs"].numpy(), expected)


@pytest.mark.parametrize("crop_files", [False, True])
def test_bands_are_read_by_identity_in_training_as_in_inference(tmp_path, crop_files):
    """A 12-band L2A raster with its bands in reverse order: training picks B2..B12 by description, as inference."""
    from engine.pipeline.bands import L2A_12

    names = list(reversed(L2A_12))
    raster = tmp_path / "reversed.tif"
    data, points = _write_s2(raster, names, lat=10.0)
    build_manifest([raster], points, tmp_path / "m.csv", GROUND, seed=0, require_photos=False,
                   crops_dir=tmp_path / "crops" if crop_files else None)
    samples = read_manifest(tmp_path / "m.csv", require_photos=False)
    dataset = PretrainDataset(samples, TINY, train=False, photos=False)
    by_name = data[[names.index(b) for b in S2_BANDS]]
    for i, sample in enumerate(samples):
        window = sample.window
        if crop_files:
            assert window is None
            with rasterio.open(sample.rs_path) as crop:
                assert crop.descriptions == tuple(S2_BANDS) and crop.count == 10
                c0, r0 = (round(v) for v in ~raster_transform(raster) * crop.transform * (0, 0))
            window = (c0, r0, 64, 64)
        c0, r0, w, h = window
        raw = by_name[:, r0:r0 + h, c0:c0 + w].astype(np.float32)
        np.testing.assert_array_equal(_inference_crop(raster, window), raw)
        np.testing.assert_array_equal(dataset[i]["rs"].numpy(), preprocess_rs(raw, TINY)[0])


def test_explicit_bands_reach_training_as_they_reach_inference(tmp_path):
    """No descriptions and an odd order: --bands (data.bands) picks the same raster bands in both."""
    raster = tmp_path / "plain.tif"
    data, points = _write_s2(raster, [""] * 11, lat=40.0)
    bands = "11,10,9,8,7,6,5,4,2,1"  # one raster band number per model band
    build_manifest([raster], points, tmp_path / "m.csv", GROUND, seed=0, require_photos=False, bands=bands)
    samples = read_manifest(tmp_path / "m.csv", require_photos=False)
    dataset = PretrainDataset(samples, TINY, DataSection(bands=bands), train=False, photos=False)
    picked = data[[int(b) - 1 for b in bands.split(",")]]
    for i, sample in enumerate(samples):
        c0, r0, w, h = sample.window
        with SourceRaster(raster, TINY, bands) as src:
            inference = src.read(rasterio.windows.Window(*sample.window))[0]
        np.testing.assert_array_equal(inference, picked[:, r0:r0 + h, c0:c0 + w])
        np.testing.assert_array_equal(dataset[i]["rs"].numpy(), preprocess_rs(inference, TINY)[0])
    with pytest.raises(GAIRError, match="plain.tif: cannot tell which of the raster's 11 bands"):
        build_manifest([raster], points, tmp_path / "m2.csv", GROUND, require_photos=False)


def raster_transform(path):
    with rasterio.open(path) as ds:
        return ds.transform


def test_manifest_errors_name_the_row(tmp_path):
    write_manifest([{"rs_path": "a.tif", "sv_path": "p.png", "lon": "x", "lat": "1", "query_x": "0.5",
                     "query_y": "0.5"}], tmp_path / "m.csv")
    with pytest.raises(GAIRError, match="row 2: column lon"):
        read_manifest(tmp_path / "m.csv")
    write_manifest([{"rs_path": "a.tif", "sv_path": "p.png", "lon": "1", "lat": "1"}], tmp_path / "m.csv")
    with pytest.raises(GAIRError, match="query_x/query_y or the bbox"):
        read_manifest(tmp_path / "m.csv")


def test_dataset_items_and_determinism(manifest):
    samples = read_manifest(manifest[0])
    ds = PretrainDataset(samples, TINY, DataSection(), train=True, seed=5)
    a, b = ds[(2, 7)], ds[(2, 7)]
    assert a["rs"].shape == (10, 48, 48) and a["sv"].shape == (3, 32, 32)
    assert a["rel_xy"].dtype == torch.float64 and a["lonlat"].dtype == torch.float32
    assert all(torch.equal(a[k], b[k]) for k in ("rs", "sv", "rel_xy"))
    assert not torch.equal(a["rs"], ds[(3, 7)]["rs"]) or not torch.equal(a["sv"], ds[(3, 7)]["sv"])
    plain = PretrainDataset(samples, TINY, train=False, photos=False)[7]
    assert "sv" not in plain
    assert plain["rel_xy"].tolist() == [samples[7].query_x, samples[7].query_y]
    assert -0.3 <= float(plain["rs"].min()) and float(plain["rs"].max()) <= 1.3  # 0..1 plus bicubic overshoot


# Where the pixel at row 1, column 8 of a 12 x 12 crop lands: counter-clockwise quarter turns after an optional
# left-right flip (worked out by hand: a turn takes (r, c) to (11 - c, r), a flip takes (r, c) to (r, 11 - c)).
DIHEDRAL_TARGETS = {(0, False): (1, 8), (1, False): (3, 1), (2, False): (10, 3), (3, False): (8, 10),
                    (0, True): (1, 3), (1, True): (8, 1), (2, True): (10, 8), (3, True): (3, 10)}


@pytest.mark.parametrize("rotations,flip", sorted(DIHEDRAL_TARGETS))
def test_dihedral_moves_the_pixels_and_the_query_point_together(rotations, flip):
    crop = np.zeros((2, 12, 12), np.float32)
    crop[0, 1, 8], crop[1, 1, 8] = 1.0, 2.0  # row 1 (north), column 8 (east), in both bands
    out, moved = dihedral(crop, np.array([(8 + 0.5) / 12, (1 + 0.5) / 12]), rotations, flip)
    row, col = DIHEDRAL_TARGETS[(rotations, flip)]
    assert out.shape == crop.shape and out[0, row, col] == 1.0 and out[1, row, col] == 2.0
    assert np.count_nonzero(out) == 2  # nothing else moved in, both bands moved alike
    assert moved == pytest.approx([(col + 0.5) / 12, (row + 0.5) / 12])


def test_rs_brightness_scales_every_band_by_one_factor_in_range():
    rng = np.random.default_rng(0)
    crop = rng.uniform(0.1, 0.8, (10, 8, 8)).astype(np.float32)  # x 1.2 stays below 1: nothing clips
    factors = []
    for seed in range(200):
        out = rs_colour_jitter(crop, np.random.default_rng(seed), brightness=0.2, contrast=0.0)
        ratio = out / crop
        np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)  # the same factor for every band and pixel
        factors.append(float(ratio.flat[0]))
    assert 0.8 <= min(factors) < 0.82 and 1.18 < max(factors) <= 1.2


def test_rs_contrast_scales_deviations_about_the_mean_and_clips():
    rng = np.random.default_rng(1)
    crop = rng.uniform(0.4, 0.6, (10, 8, 8)).astype(np.float32)
    factors = []
    for seed in range(200):
        out = rs_colour_jitter(crop, np.random.default_rng(seed), brightness=0.0, contrast=0.3)
        assert out.mean() == pytest.approx(crop.mean(), abs=1e-6)  # contrast keeps the crop mean
        factor = (out - crop.mean()) / (crop - crop.mean())
        np.testing.assert_allclose(factor, np.median(factor), rtol=1e-3, atol=1e-3)
        factors.append(float(np.median(factor)))
    assert 0.7 <= min(factors) < 0.73 and 1.27 < max(factors) <= 1.3
    bright = rs_colour_jitter(np.full((10, 4, 4), 0.95, np.float32), np.random.default_rng(3), 0.5, 0.0)
    assert bright.max() <= 1.0 and bright.min() >= 0.0


def test_sv_colour_jitter_strength_zero_is_identity_and_grey_stays_grey():
    rng = np.random.default_rng(0)
    img = rng.integers(30, 220, (20, 16, 3)).astype(np.uint8)
    np.testing.assert_allclose(sv_colour_jitter(img, np.random.default_rng(1), 0.0), img, atol=1e-3)
    changed = sv_colour_jitter(img, np.random.default_rng(1), 0.3)
    assert changed.shape == img.shape and 0 <= changed.min() and changed.max() <= 255
    assert np.abs(changed - img).mean() > 1.0
    levels = []
    for seed in range(100):  # on a flat grey photo contrast, saturation and hue change nothing: brightness only
        out = sv_colour_jitter(np.full((6, 5, 3), 100, np.uint8), np.random.default_rng(seed), 0.1)
        np.testing.assert_allclose(out, out[0, 0, 0], atol=1e-3)
        levels.append(float(out[0, 0, 0]))
    assert 90 - 1e-3 <= min(levels) < 92 and 108 < max(levels) <= 110 + 1e-3


def test_random_resized_crop_is_a_window_of_the_photo_of_the_asked_size():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 30, 3)).astype(np.uint8)
    for seed in range(50):
        crop = random_resized_crop(img, np.random.default_rng(seed), (0.5, 1.0))
        h, w = crop.shape[:2]
        assert 0.5 * 0.9 <= h * w / (40 * 30) <= 1.0 and 3 / 4 * 0.85 <= w / h <= 4 / 3 * 1.15
        tops, lefts = np.nonzero(img[:41 - h, :31 - w, 0] == crop[0, 0, 0])
        assert any(np.array_equal(img[t:t + h, c:c + w], crop) for t, c in zip(tops, lefts))
    assert random_resized_crop(img, rng, (1.0, 1.0)) is img


def test_sampler_shards_and_resumes():
    full = EpochSampler(50, num_replicas=2, rank=0, seed=1)
    other = EpochSampler(50, num_replicas=2, rank=1, seed=1)
    full.set_epoch(3)
    other.set_epoch(3)
    keys, keys1 = list(full), list(other)
    assert {k[0] for k in keys} == {3} and len(keys) == 25
    assert not {k[1] for k in keys} & {k[1] for k in keys1}
    full.set_epoch(3, skip=10)
    assert list(full) == keys[10:] and len(full) == 15
