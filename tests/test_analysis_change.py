"""Change between two dates: a pair built from the real samples where one part of the ground is replaced is found
by the Otsu mask; mixed spaces, dims and grids are refused naming what differs; the output covers the overlap."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

import engine
from engine import Cancelled, GAIRError
from engine.analysis.change import change, otsu_threshold
from engine.cli.main import main
from engine.io.embedding_writer import EmbeddingRasterWriter

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
REPLACED = (slice(50, 140), slice(120, 220))  # rows, cols of detroit replaced by tokyo's ground in the second date


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return engine.GAIRModel(engine.GAIRConfig.tiny()).eval()


@pytest.fixture(scope="module")
def dates(tiny_model, tmp_path_factory) -> tuple[Path, Path, Path]:
    """Detroit embedded as it is (first date) and, on the same grid, with 3 % more reflectance everywhere (another
    day's light) and a 90 x 100 px block of Tokyo's ground pasted in (second date): all dims, int8."""
    folder = tmp_path_factory.mktemp("change")
    with rasterio.open(SAMPLES / "detroit_rs.tif") as ds:
        profile, detroit, descriptions = ds.profile, ds.read(), ds.descriptions
    with rasterio.open(SAMPLES / "tokyo_rs.tif") as ds:
        tokyo = ds.read()
    later = (detroit.astype(np.float64) * 1.03).astype(detroit.dtype)
    later[:, REPLACED[0], REPLACED[1]] = tokyo[:, REPLACED[0], REPLACED[1]]
    with rasterio.open(folder / "later_s2.tif", "w", **profile) as ds:
        ds.write(later)
        ds.descriptions = descriptions
    kw = dict(dims=0, quicklook=False)
    before = engine.embed_raster(SAMPLES / "detroit_rs.tif", folder / "before.tif", tiny_model, **kw)
    after = engine.embed_raster(folder / "later_s2.tif", folder / "after.tif", tiny_model, **kw)
    return before, after, folder


def _read(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_the_otsu_mask_finds_the_replaced_ground(dates, tmp_path):
    before, after, _ = dates
    result = change(before, after, tmp_path / "change.tif", mask_path=tmp_path / "mask.tif",
                    polygons_path=tmp_path / "areas.gpkg", top_areas=3)
    changed = _read(tmp_path / "mask.tif") == 1
    truth = np.zeros_like(changed)
    truth[REPLACED] = True
    iou = (changed & truth).sum() / (changed | truth).sum()
    assert iou >= 0.7, iou
    distance = _read(result.path)
    assert np.nanmean(distance[truth]) > 5 * np.nanmean(distance[~truth])
    assert result.threshold_method == "otsu" and 0 < result.threshold < np.nanmean(distance[truth])
    assert result.changed_pixels == int(changed.sum()) and result.valid_pixels == int(np.isfinite(distance).sum())
    # the largest changed area is the replaced block, with its mean change
    top = result.areas[0]
    assert top.rank == 1 and top.pixels >= 0.7 * truth.sum()
    assert top.mean_change > result.threshold and top.max_change >= top.mean_change
    with rasterio.open(result.path) as ds:
        row, col = ds.index(top.x, top.y)
        assert ds.tags()["GAIR_KIND"] == "change" and ds.tags()["GAIR_THRESHOLD_METHOD"] == "otsu"
    assert truth[row, col]  # its centroid lies in the block
    meta, _, geometries, columns = pyogrio.raw.read(tmp_path / "areas.gpkg")
    fields = dict(zip(meta["fields"], columns))
    assert len(geometries) == len(result.areas) <= 3 and meta["crs"] == "EPSG:4326"
    np.testing.assert_allclose(fields["mean_change"], [a.mean_change for a in result.areas])
    polygon = shapely.from_wkb(geometries[0])
    assert polygon.geom_type == "MultiPolygon" and polygon.contains(shapely.Point(top.x, top.y))


def test_a_given_threshold_and_the_overlap_of_two_grids(tmp_path):
    rng = np.random.default_rng(0)
    first = rng.normal(size=(6, 40, 50)).astype(np.float32)
    second = first[:, 10:, 20:].copy()  # the second raster starts 10 rows and 20 cols further, and is wider
    second = np.concatenate([second, rng.normal(size=(6, 30, 15)).astype(np.float32)], axis=2)
    second[:, 5:10, 5:10] = -second[:, 5:10, 5:10]  # opposite vectors: distance 2
    a = _write(tmp_path / "a.tif", first, from_origin(1000.0, 2000.0, 10.0, 10.0))
    b = _write(tmp_path / "b.tif", second, from_origin(1200.0, 1900.0, 10.0, 10.0))
    result = change(a, b, tmp_path / "d.tif", threshold=1.0, mask_path=tmp_path / "m.tif")
    assert (result.width, result.height, result.threshold_method) == (30, 30, "given")
    distance = _read(result.path)
    np.testing.assert_allclose(distance[5:10, 5:10], 2.0, atol=1e-5)
    assert np.abs(np.delete(distance.ravel(), np.ravel_multi_index(np.mgrid[5:10, 5:10].reshape(2, -1),
                                                                   (30, 30)))).max() < 1e-5
    assert result.changed_pixels == 25 and (_read(tmp_path / "m.tif") == 1).sum() == 25
    with rasterio.open(result.path) as ds:
        assert ds.transform == from_origin(1200.0, 1900.0, 10.0, 10.0)


def _write(path: Path, block: np.ndarray, transform, model: str = "synthetic0000", **kw) -> Path:
    dims, height, width = block.shape
    with EmbeddingRasterWriter(path, width=width, height=height, crs="EPSG:32633", transform=transform, dims=dims,
                               model=model, tile=16, **kw) as writer:
        writer.write(Window(0, 0, width, height), block)
    return path


@pytest.mark.parametrize(("change_b", "message"), [
    (dict(model="other0000000"), r"different embedding spaces \(model synthetic0000 vs other0000000\)"),
    (dict(query_mode="bilinear"), r"query mode nili vs bilinear"),
    (dict(dims=5), "has 6 dims and b.tif 5"),
    (dict(crs="EPSG:32634"), "different CRSs"),
    (dict(shift=5.0), "not on the same pixel grid"),
    (dict(pixel=20.0), "different pixel sizes"),
    (dict(shift=10000.0), "do not overlap"),
])
def test_mixed_spaces_and_grids_are_refused(tmp_path, change_b, message):
    rng = np.random.default_rng(1)
    block = rng.normal(size=(6, 20, 20)).astype(np.float32)
    a = _write(tmp_path / "a.tif", block, from_origin(1000.0, 2000.0, 10.0, 10.0))
    dims = change_b.pop("dims", 6)
    shift, pixel = change_b.pop("shift", 0.0), change_b.pop("pixel", 10.0)
    crs = change_b.pop("crs", "EPSG:32633")
    b_path = tmp_path / "b.tif"
    with EmbeddingRasterWriter(b_path, width=20, height=20, crs=crs, tile=16, dims=dims,
                               transform=from_origin(1000.0 + shift, 2000.0, pixel, pixel),
                               **{"model": "synthetic0000", **change_b}) as writer:
        writer.write(Window(0, 0, 20, 20), block[:dims])
    with pytest.raises(GAIRError, match=message):
        change(a, b_path, tmp_path / "d.tif", mask_path=tmp_path / "m.tif")
    assert not (tmp_path / "d.tif").exists() and not (tmp_path / "m.tif").exists()


def test_pca_rasters_of_two_runs_are_refused(tiny_model, tmp_path):
    """Each embed-raster run fits its own PCA: the two rasters' dims mean different things."""
    kw = dict(dims=4, overlap=0.0, quicklook=False)
    a = engine.embed_raster(SAMPLES / "detroit_rs.tif", tmp_path / "a.tif", tiny_model, **kw)
    b = engine.embed_raster(SAMPLES / "tokyo_rs.tif", tmp_path / "b.tif", tiny_model, **kw)
    with pytest.raises(GAIRError, match="PCA projection"):
        change(a, b, tmp_path / "d.tif")


def test_otsu_threshold_splits_two_groups():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.05, 0.01, 9000), rng.normal(0.6, 0.05, 1000)]).clip(0, 2)
    counts, edges = np.histogram(values, bins=4000, range=(0, 2))
    threshold, separation = otsu_threshold(counts, edges)
    assert 0.1 < threshold < 0.45 and separation > 0.9
    flat, _ = np.histogram(rng.uniform(0, 2, 10000), bins=4000, range=(0, 2))
    assert otsu_threshold(flat, edges)[1] < 0.8  # no two groups: a weaker split
    same = np.zeros(4000)
    same[0] = 500  # two identical rasters: every distance 0, nothing changed
    assert otsu_threshold(same, edges) == (edges[1], 0.0)


def test_cli_change_and_cancel(dates, tmp_path, capsys):
    before, after, _ = dates
    code = main(["change", str(before), str(after), str(tmp_path / "d.tif"), "--polygons",
                 str(tmp_path / "areas.gpkg"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "Otsu's threshold" in out and "  #1  " in out and (tmp_path / "areas.gpkg").is_file()
    with pytest.raises(Cancelled):
        change(before, after, tmp_path / "c.tif", mask_path=tmp_path / "cm.tif", cancel=lambda: True)
    assert not (tmp_path / "c.tif").exists() and not (tmp_path / "cm.tif").exists()
