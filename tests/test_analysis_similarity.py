"""Similarity search finds planted look-alikes; references from points, layers and embedding layers; ranking."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from pyproj import Transformer

from engine import Cancelled, GAIRError
from engine.analysis import rank_features, similarity_search
from engine.analysis.pixels import read_pixels_at
from engine.analysis.similarity import cosine_scan, query_matrix
from engine.analysis.synthetic import make_planted_raster, pixel_xy
from engine.io.embedding_raster import EmbeddingRaster, sample_pixels
from engine.io.embedding_writer import EmbeddingRasterWriter
from engine.io.feature_layer import embedding_tags
from engine.io.pca import PCAProjection
from engine.io.space import EmbeddingSpace
from engine.io.vectors import write_gpkg


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_planted_raster(tmp_path_factory.mktemp("sim") / "planted.tif", dims=24, n_targets=5, seed=3)


def _near_targets(hits, targets, tol=1):
    return all(np.min(np.abs(targets - [h.row, h.col]).max(axis=1)) <= tol for h in hits)


def test_cosine_scan_matches_naive():
    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(5000, 48)).astype(np.float32)
    pixels[7] = np.nan
    refs = rng.normal(size=(3, 48)).astype(np.float32)
    unit = pixels / np.linalg.norm(pixels, axis=1, keepdims=True)
    runit = refs / np.linalg.norm(refs, axis=1, keepdims=True)
    bands = np.ascontiguousarray(pixels.T)  # the scan works on band-major (K, n) blocks
    got_max = cosine_scan(bands, query_matrix(refs, "max"))
    np.testing.assert_allclose(got_max[~np.isnan(got_max)], np.delete((unit @ runit.T).max(axis=1), 7), atol=1e-5)
    mean_q = runit.mean(axis=0)
    got_mean = cosine_scan(bands, query_matrix(refs, "mean"))
    np.testing.assert_allclose(np.delete(got_mean, 7), np.delete(unit @ (mean_q / np.linalg.norm(mean_q)), 7),
                               atol=1e-5)
    assert np.isnan(got_max[7]) and np.isnan(got_mean[7])


def test_top_k_hits_land_on_planted_lookalikes(planted, tmp_path):
    r, c = planted.targets[0]
    x, y = pixel_xy(planted, [r], [c])
    lon, lat = Transformer.from_crs(planted.crs, "EPSG:4326", always_xy=True).transform(x[0], y[0])
    result = similarity_search(planted.path, tmp_path / "sim.tif", points=[(lon, lat)], points_crs="EPSG:4326",
                               top_k=5, min_distance_px=5, exclude_radius_px=0, threshold=0.9,
                               mask_path=tmp_path / "mask.tif", hits_path=tmp_path / "hits.gpkg", block_size=64)
    assert [h.rank for h in result.hits] == [1, 2, 3, 4, 5]
    assert _near_targets(result.hits, planted.targets)
    matched = {int(np.argmin(np.abs(planted.targets - [h.row, h.col]).sum(axis=1))) for h in result.hits}
    assert matched == set(range(5))  # each look-alike found once
    assert result.hits[0].score == pytest.approx(1.0, abs=1e-5) and (result.hits[0].row, result.hits[0].col) == (r, c)
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    with rasterio.open(tmp_path / "sim.tif") as ds:
        sim = ds.read(1)
        tags = ds.tags()
        assert ds.dtypes[0] == "float32" and tags["GAIR_KIND"] == "similarity"
        assert tags["GAIR_SOURCE_SPACE"] == EmbeddingSpace("synthetic0000", "nili", "released").id
        assert not {"GAIR_SPACE", "GAIR_MODEL", "GAIR_DIMS"} & set(tags)  # not an embedding raster
    assert np.isnan(sim[planted.classes < 0]).all() and np.isfinite(sim[planted.classes >= 0]).all()
    background = sim[(planted.classes >= 0)]
    assert np.sort(background)[-45] > 0.9 > np.sort(background)[-46]  # exactly the 5 patches x 9 px stand out
    with rasterio.open(tmp_path / "mask.tif") as ds:
        mask = ds.read(1)
    assert result.mask_pixels == int((mask == 1).sum()) == int((sim >= 0.9).sum()) >= 45
    assert (mask[planted.classes < 0] == 255).all()
    meta, _, wkb, fields = pyogrio.raw.read(tmp_path / "hits.gpkg")
    assert list(fields[0]) == [1, 2, 3, 4, 5] and "rank" in meta["fields"]
    np.testing.assert_allclose(shapely.get_coordinates(shapely.from_wkb(wkb))[0], [x[0], y[0]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hits.gpkg", "mask.tif", "sim.tif"]


def test_reference_neighbourhood_is_left_out_of_the_top_places(planted, tmp_path):
    """By default (radius = min distance) the clicked target is not its own rank 1: the other 4 targets are the
    hits; a larger radius also drops a target inside it, 0 keeps the reference as rank 1 (score 1)."""
    r, c = planted.targets[0]
    x, y = pixel_xy(planted, [r], [c])
    others = planted.targets[1:]
    result = similarity_search(planted.path, tmp_path / "sim.tif", points=[(x[0], y[0])], top_k=5,
                               min_distance_px=5, threshold=0.9)
    found = sorted((h.row, h.col) for h in result.hits)
    assert len(found) == 4 and _near_targets(result.hits, others, tol=1)
    assert all(np.hypot(h.row - r, h.col - c) >= 5 for h in result.hits)
    assert all(h.score < 1.0 - 1e-4 for h in result.hits)
    # a radius reaching the nearest other target drops it too
    nearest = float(np.min(np.hypot(*(others - [r, c]).T)))
    wide = similarity_search(planted.path, tmp_path / "wide.tif", points=[(x[0], y[0])], top_k=5,
                             min_distance_px=5, exclude_radius_px=int(nearest) + 2, threshold=0.9)
    assert len(wide.hits) == 3 and all(np.hypot(h.row - r, h.col - c) >= nearest + 1 for h in wide.hits)
    kept = similarity_search(planted.path, tmp_path / "kept.tif", points=[(x[0], y[0])], top_k=5,
                             min_distance_px=5, exclude_radius_px=0, threshold=0.9)
    assert (kept.hits[0].row, kept.hits[0].col) == (r, c) and kept.hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert sorted((h.row, h.col) for h in kept.hits[1:]) == found


def test_polygon_reference_layer_and_max_aggregate(planted, tmp_path):
    rows, cols = planted.targets[:2, 0], planted.targets[:2, 1]
    xs, ys = pixel_xy(planted, rows, cols)
    squares = shapely.buffer(shapely.points(xs, ys), 12, cap_style="square")  # ~3x3 px around two targets
    write_gpkg(tmp_path / "refs.gpkg", squares, {"name": np.array(["a", "b"], dtype=object)}, planted.crs)
    result = similarity_search(planted.path, tmp_path / "sim.tif", reference_layer=tmp_path / "refs.gpkg",
                               aggregate="max", top_k=5, exclude_radius_px=0)
    assert result.references == 2 and _near_targets(result.hits, planted.targets)


def test_pca_raster_projects_full_dim_reference_layer(planted, tmp_path):
    """An embedding layer in the model's full space is projected through the raster's PCA sidecar."""
    from rasterio.windows import Window

    with EmbeddingRaster(planted.path) as full:
        vectors, _, _ = sample_pixels(full, 4000, seed=0)
        block = full.read_block(Window(0, 0, full.width, full.height))
    pca = PCAProjection.from_sample(vectors, 8, model=full.meta.model)
    reduced = pca.transform(block.reshape(24, -1).T).T.reshape(8, *block.shape[1:])
    with EmbeddingRasterWriter(tmp_path / "pca.tif", width=full.width, height=full.height, crs=full.crs,
                               transform=full.transform, dims=8, model=full.meta.model, pca=pca, tile=64) as w:
        w.write(Window(0, 0, full.width, full.height), reduced)
    r, c = planted.targets[1]
    ref = block[:, r, c][None]
    fields = {f"gair_{i:03d}": ref[:, i].astype(np.float64) for i in range(24)}
    x, y = pixel_xy(planted, [r], [c])
    write_gpkg(tmp_path / "emb.gpkg", shapely.points(x, y), fields, planted.crs, layer="emb",
               layer_metadata=embedding_tags(full.meta.space, 24, 24, "rs"))
    result = similarity_search(tmp_path / "pca.tif", tmp_path / "sim.tif", reference_layer=tmp_path / "emb.gpkg",
                               top_k=5)
    assert _near_targets(result.hits, planted.targets) and (result.hits[0].row, result.hits[0].col) == (r, c)
    write_gpkg(tmp_path / "other.gpkg", shapely.points(x, y), fields, planted.crs, layer="other",
               layer_metadata=embedding_tags(EmbeddingSpace("another", "nili", "released"), 24, 24, "rs"))
    with pytest.raises(GAIRError, match="different embedding spaces.*model another vs synthetic0000"):
        similarity_search(tmp_path / "pca.tif", tmp_path / "x.tif", reference_layer=tmp_path / "other.gpkg")
    assert not (tmp_path / "x.tif").exists()


def test_reference_layer_of_another_query_mode_is_refused(planted, tmp_path):
    """Vectors queried with bilinear interpolation do not compare with a NILI raster of the same model."""
    r, c = planted.targets[1]
    with EmbeddingRaster(planted.path) as raster:
        ref = read_pixels_at(raster, [r], [c])
        nili = raster.meta.space
    fields = {f"gair_{i:03d}": ref[:, i].astype(np.float64) for i in range(24)}
    x, y = pixel_xy(planted, [r], [c])
    for mode in ("bilinear", "nili"):
        write_gpkg(tmp_path / f"{mode}.gpkg", shapely.points(x, y), fields, planted.crs, layer=mode,
                   layer_metadata=embedding_tags(replace(nili, mode=mode), 24, 24, "rs"))
    with pytest.raises(GAIRError, match="query mode bilinear vs nili"):
        similarity_search(planted.path, tmp_path / "x.tif", reference_layer=tmp_path / "bilinear.gpkg")
    result = similarity_search(planted.path, tmp_path / "ok.tif", reference_layer=tmp_path / "nili.gpkg", top_k=1)
    assert (result.hits[0].row, result.hits[0].col) == (r, c)
    photos = EmbeddingSpace(nili.model)  # street-view vectors: no query mode, same model -> comparable
    write_gpkg(tmp_path / "sv.gpkg", shapely.points(x, y), fields, planted.crs, layer="sv",
               layer_metadata=embedding_tags(photos, 24, 24, "sv_aligned"))
    assert similarity_search(planted.path, tmp_path / "sv.tif", reference_layer=tmp_path / "sv.gpkg").references == 1


def test_bad_references_and_cancel(planted, tmp_path):
    with pytest.raises(GAIRError, match="outside"):
        similarity_search(planted.path, tmp_path / "s.tif", points=[(0.0, 0.0)])
    with pytest.raises(GAIRError, match="nodata"):
        x, y = pixel_xy(planted, [1], [1])
        similarity_search(planted.path, tmp_path / "s.tif", points=[(x[0], y[0])])
    with pytest.raises(GAIRError, match="reference"):
        similarity_search(planted.path, tmp_path / "s.tif")
    x, y = pixel_xy(planted, [50], [50])
    with pytest.raises(Cancelled):
        similarity_search(planted.path, tmp_path / "s.tif", points=[(x[0], y[0])], threshold=0.5,
                          mask_path=tmp_path / "m.tif", block_size=64, cancel=lambda: True)
    write_gpkg(tmp_path / "nocrs.gpkg", shapely.points(x, y), {"a": np.array([1])}, None)
    with pytest.raises(GAIRError, match="no CRS"):
        similarity_search(planted.path, tmp_path / "s.tif", reference_layer=tmp_path / "nocrs.gpkg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nocrs.gpkg"]


def test_rank_features_of_embedding_layer(tmp_path):
    rng = np.random.default_rng(5)
    base = rng.normal(size=(3, 12))
    vectors = np.concatenate([base[i] + rng.normal(size=(10, 12)) * 0.2 for i in range(3)])
    fields = {"name": np.array([f"f{i}" for i in range(30)], dtype=object)}
    fields.update({f"gair_{i:03d}": vectors[:, i] for i in range(12)})
    pts = shapely.points(rng.uniform(0, 1, 30), rng.uniform(0, 1, 30))
    space = EmbeddingSpace("m1", "nili", "released")
    write_gpkg(tmp_path / "emb.gpkg", pts, fields, "EPSG:4326", layer="emb",
               layer_metadata=embedding_tags(space, 12, 12, "rs"))
    _, fids, _, _ = pyogrio.raw.read(tmp_path / "emb.gpkg", return_fids=True)
    result = rank_features(tmp_path / "emb.gpkg", tmp_path / "ranked.gpkg", reference_fids=[int(fids[12])])
    top = [fid for fid, _ in result.ranking[:10]]
    assert set(top) == set(fids[10:20].tolist()) and top[0] == fids[12]
    meta, _, _, out = pyogrio.raw.read(tmp_path / "ranked.gpkg", layer="ranked")
    cols = dict(zip(meta["fields"], out))
    assert list(cols["sim_rank"]) == list(range(1, 31)) and cols["name"][0] == "f12"
    assert np.all(np.diff(cols["similarity"]) <= 1e-7)
    with pytest.raises(GAIRError, match="not in"):
        rank_features(tmp_path / "emb.gpkg", tmp_path / "r2.gpkg", reference_fids=[999])
    assert pyogrio.read_info(tmp_path / "ranked.gpkg", layer="ranked")["layer_metadata"]["GAIR_SPACE"] == space.id
    write_gpkg(tmp_path / "legacy.gpkg", pts, fields, "EPSG:4326", layer="legacy",
               layer_metadata=embedding_tags(replace(space, convention="legacy"), 12, 12, "rs"))
    with pytest.raises(GAIRError, match="NILI convention released vs legacy"):
        rank_features(tmp_path / "emb.gpkg", tmp_path / "r3.gpkg", reference_layer=tmp_path / "legacy.gpkg")
    write_gpkg(tmp_path / "bare.gpkg", pts, fields, "EPSG:4326", layer="bare")  # vectors of an unknown space
    with pytest.raises(GAIRError, match="bare.gpkg has embedding fields but no GAIR_MODEL metadata"):
        rank_features(tmp_path / "bare.gpkg", tmp_path / "r4.gpkg", reference_fids=[int(fids[0])])
