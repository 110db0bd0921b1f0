"""Search by street-view photo and by location: the query is the model's aligned embedding, projected through the
raster's PCA, scanned as a pixel reference is; a model that did not make the raster is refused."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import torch
from pyproj import Transformer

import engine
from engine import GAIRError
from engine.analysis.modal_search import search_by_location, search_by_photo
from engine.cli.main import main
from engine.io.embedding_raster import EmbeddingRaster
from engine.io.vectors import write_gpkg
from engine.runtime.preprocess import load_photo, preprocess_sv

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
DETROIT_LONLAT = (-83.2605, 42.4795)  # inside detroit_rs.tif


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return engine.GAIRModel(engine.GAIRConfig.tiny()).eval()


@pytest.fixture(scope="module")
def pca_raster(tiny_model, tmp_path_factory) -> Path:
    """The real Detroit sample embedded by the tiny model, reduced to 8 principal components, int8 (the default)."""
    out = tmp_path_factory.mktemp("modal") / "detroit_gair.tif"
    return engine.embed_raster(SAMPLES / "detroit_rs.tif", out, tiny_model, dims=8, overlap=0.0, quicklook=False)


def _read(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def _expected_cosine(raster_path: Path, query_full: np.ndarray) -> np.ndarray:
    """Cosine of every pixel with (n, D) model-space queries projected by the raster's PCA; max over queries."""
    with EmbeddingRaster(raster_path) as raster:
        assert raster.pca is not None
        query = raster.project(query_full)
        from rasterio.windows import Window

        pixels = raster.read_block(Window(0, 0, raster.width, raster.height)).reshape(raster.dims, -1).T
    unit = pixels / np.linalg.norm(pixels, axis=1, keepdims=True)
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    return (unit @ q.T).max(axis=1).reshape(raster.height, raster.width)


def _photo_embedding(model, *names: str) -> np.ndarray:
    inputs = np.concatenate([preprocess_sv(load_photo(SAMPLES / n), model.config) for n in names])
    return np.asarray(model.encode_sv(inputs, aligned=True))


def test_photo_search_scans_the_aligned_photo_embedding_through_the_pca(tiny_model, pca_raster, tmp_path):
    expected = _expected_cosine(pca_raster, _photo_embedding(tiny_model, "detroit_sv.jpg"))
    threshold = float(np.nanmedian(expected))  # random weights: the cosines' sign is arbitrary, half pass this
    result = search_by_photo(pca_raster, tmp_path / "photo.tif", tiny_model, photos=[SAMPLES / "detroit_sv.jpg"],
                             top_k=5, threshold=threshold, mask_path=tmp_path / "mask.tif",
                             hits_path=tmp_path / "hits.gpkg")
    sim = _read(result.path)
    np.testing.assert_allclose(sim, expected, atol=2e-5)
    assert result.references == 1 and [h.rank for h in result.hits] == [1, 2, 3, 4, 5]
    assert result.hits[0].score == pytest.approx(float(np.nanmax(sim)), abs=1e-6)
    assert all(abs(sim[h.row, h.col] - h.score) < 1e-6 for h in result.hits)
    assert (tmp_path / "hits.gpkg").is_file() and result.mask_pixels == int((sim >= threshold).sum())
    with rasterio.open(result.path) as ds:
        assert ds.tags()["GAIR_KIND"] == "similarity" and ds.tags()["GAIR_QUERY"] == "photo"


def test_photos_from_a_point_layer_with_relative_paths(tiny_model, pca_raster, tmp_path):
    for name in ("detroit_sv.jpg", "tokyo_sv.jpg"):
        shutil.copy(SAMPLES / name, tmp_path / name)
    layer = write_gpkg(tmp_path / "photos.gpkg", shapely.points([DETROIT_LONLAT, DETROIT_LONLAT, DETROIT_LONLAT]),
                       {"pic": np.array(["detroit_sv.jpg", "tokyo_sv.jpg", None], dtype=object)}, "EPSG:4326")
    result = search_by_photo(pca_raster, tmp_path / "layer.tif", tiny_model, photo_layer=layer, photo_field="pic",
                             aggregate="max", top_k=0)
    expected = _expected_cosine(pca_raster, _photo_embedding(tiny_model, "detroit_sv.jpg", "tokyo_sv.jpg"))
    assert result.references == 2  # the feature without a photo is left out
    np.testing.assert_allclose(_read(result.path), expected, atol=2e-5)
    with pytest.raises(GAIRError, match="no field 'photo'"):
        search_by_photo(pca_raster, tmp_path / "x.tif", tiny_model, photo_layer=layer)


def test_location_search_in_any_crs(tiny_model, pca_raster, tmp_path):
    result = search_by_location(pca_raster, tmp_path / "loc.tif", tiny_model, locations=[DETROIT_LONLAT], top_k=3)
    expected = _expected_cosine(pca_raster, np.asarray(tiny_model.encode_location(np.array([DETROIT_LONLAT]))))
    np.testing.assert_allclose(_read(result.path), expected, atol=2e-5)
    assert len(result.hits) == 3
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(*DETROIT_LONLAT)
    mercator = search_by_location(pca_raster, tmp_path / "merc.tif", tiny_model, locations=[(x, y)],
                                  locations_crs="EPSG:3857", top_k=0)
    np.testing.assert_allclose(_read(mercator.path), _read(result.path), atol=1e-5)
    layer = write_gpkg(tmp_path / "pts.gpkg", shapely.points([(x, y)]), {"n": np.array([1])}, "EPSG:3857")
    from_layer = search_by_location(pca_raster, tmp_path / "layer.tif", tiny_model, location_layer=layer, top_k=0)
    np.testing.assert_allclose(_read(from_layer.path), _read(result.path), atol=1e-5)
    with pytest.raises(GAIRError, match="not valid longitude/latitude"):
        search_by_location(pca_raster, tmp_path / "bad.tif", tiny_model, locations=[(500000.0, 4500000.0)])


def test_a_model_that_did_not_make_the_raster_is_refused(pca_raster, tmp_path):
    torch.manual_seed(1)
    other = engine.GAIRModel(engine.GAIRConfig.tiny()).eval()
    with pytest.raises(GAIRError, match=r"did not make detroit_gair.tif \(model .* vs .*\).*--model"):
        search_by_photo(pca_raster, tmp_path / "p.tif", other, photos=[SAMPLES / "tokyo_sv.jpg"])
    with pytest.raises(GAIRError, match="did not make detroit_gair.tif"):
        search_by_location(pca_raster, tmp_path / "l.tif", other, locations=[DETROIT_LONLAT])
    assert not list(tmp_path.iterdir())  # nothing written


def test_unreadable_photo_and_missing_query_are_one_line_errors(tiny_model, pca_raster, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(GAIRError, match="broken.jpg"):
        search_by_photo(pca_raster, tmp_path / "p.tif", tiny_model, photos=[tmp_path / "broken.jpg"])
    with pytest.raises(GAIRError, match="give a street-view photo"):
        search_by_photo(pca_raster, tmp_path / "p.tif", tiny_model)
    with pytest.raises(GAIRError, match="give a location"):
        search_by_location(pca_raster, tmp_path / "l.tif", tiny_model)
    assert not (tmp_path / "p.tif").exists() and not (tmp_path / "l.tif").exists()


def test_cli_searches_by_photo_and_location_with_a_bundle(tiny_model, pca_raster, tmp_path, capsys):
    bundle = engine.save_bundle(tiny_model, tmp_path / "bundle")
    code = main(["search-by-photo", str(pca_raster), str(tmp_path / "p.tif"), "--photo",
                 str(SAMPLES / "detroit_sv.jpg"), "--model", str(bundle), "--top-k", "3", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "1 reference(s)" in out and out.count("  #") == 3
    code = main(["search-by-location", str(pca_raster), str(tmp_path / "l.tif"), "--location",
                 *map(str, DETROIT_LONLAT), "--model", str(bundle), "--top-k", "2", "--quiet"])
    assert code == 0 and capsys.readouterr().out.count("  #") == 2
    torch.manual_seed(1)
    other = engine.save_bundle(engine.GAIRModel(engine.GAIRConfig.tiny()), tmp_path / "other")
    code = main(["search-by-photo", str(pca_raster), str(tmp_path / "o.tif"), "--photo",
                 str(SAMPLES / "detroit_sv.jpg"), "--model", str(other), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: the model (fingerprint") and err.count("\n") == 1


def test_similarity_search_takes_a_photo_or_a_location_too(tiny_model, pca_raster, tmp_path, capsys):
    bundle = engine.save_bundle(tiny_model, tmp_path / "bundle")
    code = main(["similarity-search", str(pca_raster), str(tmp_path / "p.tif"), "--photo",
                 str(SAMPLES / "detroit_sv.jpg"), "--model", str(bundle), "--top-k", "0", "--quiet"])
    assert code == 0 and "1 reference(s)" in capsys.readouterr().out
    expected = _expected_cosine(pca_raster, _photo_embedding(tiny_model, "detroit_sv.jpg"))
    np.testing.assert_allclose(_read(tmp_path / "p.tif"), expected, atol=2e-5)
    code = main(["similarity-search", str(pca_raster), str(tmp_path / "l.tif"), "--location", *map(str, DETROIT_LONLAT),
                 "--model", str(bundle), "--top-k", "0", "--quiet"])
    assert code == 0
    with rasterio.open(tmp_path / "l.tif") as ds:
        assert ds.tags()["GAIR_QUERY"] == "location"
    code = main(["similarity-search", str(pca_raster), str(tmp_path / "x.tif"), "--location", *map(str, DETROIT_LONLAT),
                 "--point", *map(str, DETROIT_LONLAT), "--quiet"])
    assert code == 2 and "one kind of reference" in capsys.readouterr().err


def test_the_worker_runs_both_searches_with_its_loaded_model(tiny_model, pca_raster, tmp_path):
    """Operations as the plugin sends them: JSON parameters, the model by path (loaded once by the worker)."""
    from engine.service.jobs import JobRunner

    bundle = str(engine.save_bundle(tiny_model, tmp_path / "bundle"))
    runner, messages = JobRunner(), []
    photo = runner.run("1", "search_by_photo", {"raster_path": str(pca_raster), "out_path": str(tmp_path / "p.tif"),
                                                "photos": [str(SAMPLES / "detroit_sv.jpg")], "top_k": 2,
                                                "hits_path": str(tmp_path / "p.gpkg"), "model": bundle,
                                                "device": "cpu"}, messages.append)
    assert photo["type"] == "result" and len(photo["result"]["hits"]) == 2 and photo["result"]["hits_path"]
    located = runner.run("2", "search_by_location", {"raster_path": str(pca_raster), "model": bundle,
                                                     "out_path": str(tmp_path / "l.tif"), "device": "cpu",
                                                     "locations": [list(DETROIT_LONLAT)]}, messages.append)
    assert located["type"] == "result" and located["result"]["references"] == 1
    assert any(m["type"] == "progress" for m in messages)
