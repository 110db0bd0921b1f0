"""Classify from location: labelled points -> location embeddings -> classifier -> class raster over any extent."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import rasterio
import torch

import engine
from engine import GAIRError
from engine.analysis.location_map import classify_location
from engine.analysis.rasters import read_class_names
from engine.cli.main import main as engine_cli


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return engine.GAIRModel(engine.GAIRConfig.tiny()).eval()


def write_points(path, n: int = 120, seed: int = 0):
    """Two classes split at lon 10.5 (west: forest, east: water) over 10-11 E, 47-48 N."""
    rng = np.random.default_rng(seed)
    lon, lat = rng.uniform(10, 11, n), rng.uniform(47, 48, n)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["lon", "lat", "label"])
        for x, y in zip(lon, lat):
            writer.writerow([x, y, "forest" if x < 10.5 else "water"])
    return path


def test_location_map_learns_where_classes_are(tmp_path, tiny_model):
    points = write_points(tmp_path / "pts.csv")
    result = classify_location(points, tmp_path / "classes.tif", "label", tiny_model, extent=(10, 47, 11, 48),
                               pixel_size=0.02, confidence_path=tmp_path / "conf.tif", seed=0)
    assert result.classes == ["forest", "water"] and result.points == 120 and result.folds == 5
    assert result.accuracy > 0.85, result.accuracy
    assert (result.width, result.height) == (50, 50)
    with rasterio.open(result.path) as ds:
        classes = ds.read(1)
        assert ds.crs.to_epsg() == 4326 and ds.transform.a == pytest.approx(0.02)
        assert ds.tags()["GAIR_KIND"] == "classes"
    assert read_class_names(result.path) == ["forest", "water"]
    west, east = classes[:, :20], classes[:, 30:]  # away from the border at lon 10.5 (column 25)
    assert (west == 1).mean() > 0.85 and (east == 2).mean() > 0.85
    assert sum(result.counts.values()) == 2500
    with rasterio.open(tmp_path / "conf.tif") as ds:
        conf = ds.read(1)
    assert conf.min() >= 0.5 - 1e-6 and conf.max() <= 1.0  # the chosen class's probability (2 classes)


def test_any_extent_crs_and_default_extent(tmp_path, tiny_model):
    points = write_points(tmp_path / "pts.csv")
    # the same area in UTM 32N metres, 2 km pixels
    result = classify_location(points, tmp_path / "utm.tif", "label", tiny_model,
                               extent=(650000, 5210000, 720000, 5320000), extent_crs="EPSG:32632", pixel_size=2000)
    with rasterio.open(result.path) as ds:
        assert ds.crs.to_epsg() == 32632 and (ds.width, ds.height) == (35, 55)
    default = classify_location(points, tmp_path / "d.tif", "label", tiny_model)
    assert default.width == 512
    with rasterio.open(default.path) as ds:
        assert ds.bounds.left < 10.0 and ds.bounds.right > 11.0  # the points' box, padded


def test_errors_and_no_partial_output(tmp_path, tiny_model):
    points = write_points(tmp_path / "pts.csv")
    with pytest.raises(GAIRError, match="more than"):
        classify_location(points, tmp_path / "x.tif", "label", tiny_model, extent=(0, 0, 10, 10), pixel_size=1e-3)
    with pytest.raises(GAIRError, match="no column 'klass'"):
        classify_location(points, tmp_path / "x.tif", "klass", tiny_model)
    one = tmp_path / "one.csv"
    one.write_text("lon,lat,label\n10,47,a\n10.2,47.1,a\n")
    with pytest.raises(GAIRError, match="need at least two"):
        classify_location(one, tmp_path / "x.tif", "label", tiny_model)
    with pytest.raises(engine.Cancelled):
        classify_location(points, tmp_path / "x.tif", "label", tiny_model, cancel=lambda: True)
    assert not list(tmp_path.glob("x.tif*"))


def test_cli_command(tmp_path, tiny_model, capsys):
    from engine.model.checkpoint import save_bundle

    save_bundle(tiny_model, tmp_path / "bundle")
    points = write_points(tmp_path / "pts.csv")
    code = engine_cli(["classify-location", str(points), str(tmp_path / "c.tif"), "--model", str(tmp_path / "bundle"),
                       "--extent", "10", "47", "11", "48", "--pixel-size", "0.05", "--method", "knn", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "cross-validated accuracy" in out and "forest:" in out
    with rasterio.open(tmp_path / "c.tif") as ds:
        assert (ds.width, ds.height) == (20, 20)


def test_points_from_a_vector_layer_in_another_crs(tmp_path):
    import pyogrio.raw
    import shapely
    from pyproj import Transformer

    from engine.analysis.location_map import read_points

    lonlat, labels = read_points(write_points(tmp_path / "pts.csv", n=40), "label")
    xs, ys = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True).transform(*lonlat.T)
    gpkg = tmp_path / "utm.gpkg"
    pyogrio.raw.write(str(gpkg), shapely.to_wkb(shapely.points(xs, ys)), [np.asarray(labels, object)], ["cover"],
                      geometry_type="Point", crs="EPSG:32632", driver="GPKG")
    back, names = read_points(gpkg, "cover")
    np.testing.assert_allclose(back, lonlat, atol=1e-7)
    assert names.tolist() == labels.tolist()
    with pytest.raises(GAIRError, match="no column 'klass'"):
        read_points(gpkg, "klass")
