"""embed_features / embed_photos / embed_locations: exact values, CRS handling, nulls with reasons, spaces."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely
import torch
from pyproj import Transformer
from rasterio.features import geometry_mask

import engine
from engine import GAIRError
from engine.io.embedding_raster import EmbeddingRaster
from engine.io.space import EmbeddingSpace
from engine.pipeline import embed_features, embed_locations, embed_photos, embed_raster
from engine.runtime.preprocess import load_photo, preprocess_rs, preprocess_sv

from .test_pipeline_raster import MODEL_BANDS, synthetic_s2, write_raster

X0, Y0 = 500000.0, 4500000.0  # raster origin (EPSG:32633, 10 m pixels)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return engine.GAIRModel(engine.GAIRConfig.tiny()).eval()


def write_layer(path: Path, geoms, fields: dict, crs: str | None, name: str = "features") -> Path:
    geoms = np.asarray(geoms, dtype=object)
    types = {shapely.get_type_id(g) for g in geoms if g is not None}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'crs' was not provided")  # layers without a CRS are made on purpose
        pyogrio.raw.write(path, shapely.to_wkb(geoms), [np.asarray(v) for v in fields.values()], list(fields),
                          layer=name, driver="GPKG", geometry_type="Point" if types == {0} else "Unknown", crs=crs)
    return path


def read_output(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    meta, _, _, columns = pyogrio.raw.read(path, layer=0)
    cols = dict(zip(meta["fields"], columns))
    vec = np.column_stack([cols[n] for n in sorted(n for n in cols if n[5:].isdigit())]).astype(np.float64)
    table = pyogrio.raw.read(path, layer="gair_meta", read_geometry=False)
    return vec, cols["gair_status"], dict(zip(table[0]["fields"], (c[0] for c in table[3])))


def _utm_to(crs: str, xs, ys):
    return Transformer.from_crs("EPSG:32633", crs, always_xy=True).transform(np.asarray(xs), np.asarray(ys))


def test_points_are_the_nili_query_of_their_crop_in_any_layer_crs(tmp_path, tiny_model):
    data = synthetic_s2(64, 64)  # exactly one crop: the crop of every point is the whole raster
    raster = write_raster(tmp_path / "one.tif", data)
    xs, ys = X0 + np.array([12.0, 333.3, 600.1]), Y0 - np.array([50.0, 321.0, 17.7])
    tokens = tiny_model.rs_tokens(preprocess_rs(data[MODEL_BANDS].astype(np.float32), tiny_model.config))
    rel = np.stack([(xs - X0) / 640, (Y0 - ys) / 640], axis=-1)[None]
    expected = tiny_model.query_tokens(tokens, rel)[0]
    for crs in ("EPSG:32633", "EPSG:4326", "EPSG:3857"):
        layer = write_layer(tmp_path / f"p_{crs[5:]}.gpkg", shapely.points(*_utm_to(crs, xs, ys)),
                            {"name": np.array(["a", "b", "c"], dtype=object)}, crs)
        result = embed_features(raster, layer, tmp_path / f"out_{crs[5:]}.gpkg", tiny_model)
        vec, status, meta = read_output(result.path)
        assert result.embedded == 3 and list(status) == ["ok"] * 3
        np.testing.assert_allclose(vec, expected, rtol=1e-4, atol=1e-5)
        assert meta["GAIR_MODEL"] == tiny_model.fingerprint and meta["GAIR_KIND"] == "embedding"
        assert (meta["GAIR_MODALITY"], meta["GAIR_QUERY_MODE"], meta["GAIR_NILI_CONVENTION"]) == ("rs", "nili",
                                                                                                  "released")
        assert meta["GAIR_SPACE"] == EmbeddingSpace(tiny_model.fingerprint, "nili", "released").id == result.space


def test_points_outside_or_on_nodata_get_nulls_and_one_warning(tmp_path, tiny_model):
    data = synthetic_s2(100, 100)
    data[:, 80:, 80:] = 0
    raster = write_raster(tmp_path / "r.tif", data)
    xs = X0 + np.array([55.0, 905.0, 2000.0, 500.0])
    ys = Y0 - np.array([55.0, 905.0, 50.0, 999.0])
    layer = write_layer(tmp_path / "p.gpkg", list(shapely.points(xs, ys)) + [None],
                        {"id": np.arange(5)}, "EPSG:32633")
    with pytest.warns(UserWarning, match=r"2 of 5 features embedded.*1 \(nodata\), 1 \(outside raster\), 1 \(empty"):
        result = embed_features(raster, layer, tmp_path / "o.gpkg", tiny_model)
    vec, status, _ = read_output(result.path)
    assert list(status) == ["ok", "nodata", "outside raster", "ok", "empty geometry"]
    assert np.isnan(vec[[1, 2, 4]]).all() and np.isfinite(vec[[0, 3]]).all()
    assert result.problems["nodata"] == 1
    far = write_layer(tmp_path / "far.gpkg", shapely.points([10.0], [10.0]), {"id": np.arange(1)}, "EPSG:4326")
    with pytest.warns(UserWarning) as record:
        embed_features(raster, far, tmp_path / "far_out.gpkg", tiny_model)
    messages = [str(w.message) for w in record]
    assert any("outside r.tif: is the layer's CRS" in m for m in messages)
    assert any("0 of 1 features embedded" in m for m in messages)


def test_polygon_mean_is_the_mean_of_the_embedding_raster_inside(tmp_path, tiny_model):
    raster = write_raster(tmp_path / "r.tif", synthetic_s2(160, 224, seed=4))
    field_path = embed_raster(raster, tmp_path / "field.tif", tiny_model, dtype="float32", quicklook=False)
    with rasterio.open(field_path) as ds:
        field, transform = ds.read(), ds.transform
    whole = shapely.box(X0 + 1, Y0 - 1599, X0 + 2239, Y0 - 1)  # the same field: both use the raster's lattice
    small = shapely.Polygon([(X0 + 300, Y0 - 300), (X0 + 700, Y0 - 350), (X0 + 450, Y0 - 800)])
    layer = write_layer(tmp_path / "poly.gpkg", [whole, small], {"k": np.arange(2)}, "EPSG:32633")
    vec, status, _ = read_output(embed_features(raster, layer, tmp_path / "o.gpkg", tiny_model).path)
    assert list(status) == ["ok", "ok"]
    np.testing.assert_allclose(vec[0], field.reshape(32, -1).mean(axis=1), rtol=1e-4, atol=1e-5)
    inside = geometry_mask([small], field.shape[1:], transform, invert=True)
    np.testing.assert_allclose(vec[1], field[:, inside].mean(axis=1), rtol=1e-4, atol=1e-5)
    cent, _, _ = read_output(embed_features(raster, layer, tmp_path / "c.gpkg", tiny_model, polygons="centroid").path)
    point = shapely.centroid(small)
    pts = write_layer(tmp_path / "cp.gpkg", [point], {"k": np.arange(1)}, "EPSG:32633")
    at_point, _, _ = read_output(embed_features(raster, pts, tmp_path / "cpo.gpkg", tiny_model).path)
    np.testing.assert_allclose(cent[1], at_point[0], rtol=1e-6)


def test_space_of_an_embedding_raster_and_the_analysis_reader(tmp_path, tiny_model):
    raster = write_raster(tmp_path / "r.tif", synthetic_s2(64, 96, seed=5))
    reduced = embed_raster(raster, tmp_path / "pca.tif", tiny_model, dims=5, quicklook=False)
    layer = write_layer(tmp_path / "p.gpkg", shapely.points([X0 + 100, X0 + 700], [Y0 - 100, Y0 - 500]),
                        {"id": np.arange(2)}, "EPSG:32633")
    full, _, _ = read_output(embed_features(raster, layer, tmp_path / "full.gpkg", tiny_model).path)
    result = embed_features(raster, layer, tmp_path / "red.gpkg", tiny_model, space=reduced)
    vec, _, meta = read_output(result.path)
    with EmbeddingRaster(reduced) as er:
        np.testing.assert_allclose(vec, er.project(full), rtol=1e-5, atol=1e-6)
        assert meta["GAIR_SPACE"] == er.meta.space.id == result.space and meta["GAIR_DIMS"] == "5"
        from engine.io.feature_layer import read_embedding_layer

        _, vectors, layer_meta = read_embedding_layer(result.path)
        assert vectors.shape == (2, 5) and layer_meta.space == er.meta.space
    torch.manual_seed(1)
    other = engine.GAIRModel(engine.GAIRConfig.tiny()).eval()
    with pytest.raises(GAIRError, match="model .* vs "):
        embed_features(raster, layer, tmp_path / "x.gpkg", other, space=reduced)
    with pytest.raises(GAIRError, match="query mode bicubic vs nili"):
        embed_features(raster, layer, tmp_path / "x.gpkg", tiny_model, space=reduced, mode="bicubic")


def test_photos_relative_absolute_and_unreadable(tmp_path, samples_dir, tiny_model):
    photo = samples_dir / "tokyo_sv.jpg"
    (tmp_path / "photos").mkdir()
    shutil.copy(photo, tmp_path / "photos" / "a.jpg")
    (tmp_path / "photos" / "broken.jpg").write_text("not an image")
    paths = np.array(["photos/a.jpg", str(photo), "photos/broken.jpg", "photos/missing.jpg", None], dtype=object)
    layer = write_layer(tmp_path / "sv.gpkg", shapely.points(np.arange(5.0), np.zeros(5)), {"img": paths},
                        "EPSG:4326")
    with pytest.warns(UserWarning, match=r"2 of 5.*2 \(unreadable photo\), 1 \(no photo path\)"):
        result = embed_photos(layer, tmp_path / "o.gpkg", tiny_model, photo_field="img")
    vec, status, meta = read_output(result.path)
    assert status[2].startswith("unreadable photo: ") and "broken.jpg" in status[2] and "missing.jpg" in status[3]
    expected = tiny_model.encode_sv(preprocess_sv(load_photo(photo), tiny_model.config))[0]
    np.testing.assert_allclose(vec[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vec[1], expected, rtol=1e-5, atol=1e-6)
    assert np.isnan(vec[2:]).all() and (meta["GAIR_KIND"], meta["GAIR_MODALITY"]) == ("embedding", "sv")
    assert meta["GAIR_QUERY_MODE"] == "" and meta["GAIR_SPACE"] == EmbeddingSpace(tiny_model.fingerprint).id
    with pytest.raises(GAIRError, match="no field 'photo'.*--photo-field"):
        embed_photos(layer, tmp_path / "x.gpkg", tiny_model)


def test_locations_and_layers_without_crs(tmp_path, tiny_model):
    lonlat = np.array([[139.75, 35.66], [-83.26, 42.48], [11.35, 48.1]])
    xs, ys = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(lonlat[:, 0], lonlat[:, 1])
    layer = write_layer(tmp_path / "l.gpkg", shapely.points(xs, ys), {"id": np.arange(3)}, "EPSG:3857")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all embedded: no warning
        vec, status, meta = read_output(embed_locations(layer, tmp_path / "o.gpkg", tiny_model).path)
    np.testing.assert_allclose(vec, tiny_model.encode_location(lonlat), rtol=1e-4, atol=1e-5)
    assert (meta["GAIR_KIND"], meta["GAIR_MODALITY"]) == ("embedding", "location")
    bare = write_layer(tmp_path / "bare.gpkg", shapely.points([1.0], [2.0]), {"id": np.arange(1)}, None)
    with pytest.raises(GAIRError, match="no CRS"):
        embed_locations(bare, tmp_path / "x.gpkg", tiny_model)
    with pytest.raises(GAIRError, match="no CRS"):
        embed_features(write_raster(tmp_path / "r.tif", synthetic_s2(64, 64)), bare, tmp_path / "y.gpkg", tiny_model)
    assert not (tmp_path / "x.gpkg").exists() and not (tmp_path / "y.gpkg").exists()


def test_cancel_and_progress(tmp_path, tiny_model):
    raster = write_raster(tmp_path / "r.tif", synthetic_s2(64, 64))
    layer = write_layer(tmp_path / "p.gpkg", shapely.points(X0 + np.arange(20) * 30, np.full(20, Y0 - 300)),
                        {"id": np.arange(20)}, "EPSG:32633")
    with pytest.raises(engine.Cancelled):
        embed_features(raster, layer, tmp_path / "o.gpkg", tiny_model, batch_size=4, cancel=lambda: True)
    with pytest.raises(engine.Cancelled):
        embed_locations(layer, tmp_path / "o.gpkg", tiny_model, cancel=lambda: True)
    assert not (tmp_path / "o.gpkg").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["p.gpkg", "r.tif"]
    fractions = []
    embed_features(raster, layer, tmp_path / "o.gpkg", tiny_model, progress=fractions.append)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
