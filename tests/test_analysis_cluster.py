"""k-means recovers planted classes, picks k by silhouette, is seeded, writes colour table and polygons."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio

from engine import Cancelled, GAIRError
from engine.analysis import cluster_embeddings, read_class_names
from engine.analysis.synthetic import make_planted_raster


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_planted_raster(tmp_path_factory.mktemp("cl") / "planted.tif", dims=20, n_classes=4, n_targets=0,
                               seed=11, dtype="int16")


def _purity(pred: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of valid pixels whose cluster's majority class is their class (1.0 = clusters = classes)."""
    valid = truth >= 0
    agree = 0
    for cluster in np.unique(pred[valid]):
        agree += np.bincount(truth[valid & (pred == cluster)]).max()
    return agree / valid.sum()


def test_automatic_k_recovers_planted_classes(planted, tmp_path):
    result = cluster_embeddings(planted.path, tmp_path / "c.tif", k=6, auto_k=True, sample_size=3000, seed=0,
                            polygons_path=tmp_path / "c.gpkg", block_size=64)
    assert result.k == 4 and max(result.silhouettes, key=result.silhouettes.get) == 4
    assert sorted(result.silhouettes) == [2, 3, 4, 5, 6]
    with rasterio.open(tmp_path / "c.tif") as ds:
        pred = ds.read(1)
        assert ds.dtypes[0] == "uint8" and ds.nodata == 0
        assert ds.colormap(1)[0][3] == 0 and len({ds.colormap(1)[i] for i in range(1, 5)}) == 4
    assert (pred[planted.classes < 0] == 0).all() and set(np.unique(pred[planted.classes >= 0])) == {1, 2, 3, 4}
    assert _purity(pred, planted.classes) > 0.99 and _purity(planted.classes, pred.astype(int) - 1) > 0.99
    assert result.counts == [int((pred == i).sum()) for i in range(1, 5)]
    assert result.counts == sorted(result.counts, reverse=True)  # class 1 = largest cluster in the sample
    assert read_class_names(tmp_path / "c.tif") == ["cluster 1", "cluster 2", "cluster 3", "cluster 4"]
    meta, _, _, fields = pyogrio.raw.read(tmp_path / "c.gpkg")
    cols = dict(zip(meta["fields"], fields))
    assert result.polygons == len(cols["class"]) >= 4 and set(cols["class"]) == {1, 2, 3, 4}
    assert sum(cols["area"]) == pytest.approx((planted.classes >= 0).sum() * 100.0)  # 10 m pixels


def test_seeded_and_fixed_k(planted, tmp_path):
    a = cluster_embeddings(planted.path, tmp_path / "a.tif", k=3, sample_size=2000, seed=5)
    b = cluster_embeddings(planted.path, tmp_path / "b.tif", k=3, sample_size=2000, seed=5)
    with rasterio.open(a.path) as da, rasterio.open(b.path) as db:
        assert np.array_equal(da.read(1), db.read(1))
    assert a.k == 3 and a.silhouettes == {} and a.counts == b.counts


def test_bad_input_and_cancel(planted, tmp_path):
    with pytest.raises(GAIRError, match="too few"):
        cluster_embeddings(planted.path, tmp_path / "x.tif", k=50, sample_size=100)
    with pytest.raises(GAIRError, match="k must be"):
        cluster_embeddings(planted.path, tmp_path / "x.tif", k=1)
    with pytest.raises(GAIRError, match="overwrite"):
        cluster_embeddings(planted.path, planted.path, k=3)
    calls = iter(range(10**6))
    with pytest.raises(Cancelled):
        cluster_embeddings(planted.path, tmp_path / "x.tif", k=3, sample_size=500, polygons_path=tmp_path / "x.gpkg",
                       block_size=64, cancel=lambda: next(calls) > 8)
    with pytest.raises(GAIRError, match="not a GAIR embedding raster"):
        src = str(Path(__file__).resolve().parents[1] / "data" / "samples" / "detroit_rs.tif")
        cluster_embeddings(src, tmp_path / "x.tif")
    assert list(tmp_path.iterdir()) == []


def test_derived_rasters_say_what_they_are_and_are_not_embeddings(planted, tmp_path):
    """A class raster is tagged GAIR_KIND=classes without embedding tags; cluster/similarity refuse it."""
    from engine.analysis import similarity_search
    from engine.analysis.synthetic import pixel_xy

    classes = cluster_embeddings(planted.path, tmp_path / "classes.tif", k=3, sample_size=2000, seed=0).path
    with rasterio.open(classes) as ds:
        tags = ds.tags()
    assert tags["GAIR_KIND"] == "classes" and tags["GAIR_SOURCE"] == "planted.tif"
    assert not {"GAIR_SPACE", "GAIR_MODEL", "GAIR_DIMS", "GAIR_QUERY_MODE"} & set(tags)
    with pytest.raises(GAIRError, match="classes.tif is a GAIR classes raster"):
        cluster_embeddings(classes, tmp_path / "again.tif", k=2)
    x, y = pixel_xy(planted, [40], [40])
    with pytest.raises(GAIRError, match="is a GAIR classes raster .*not an embedding raster"):
        similarity_search(classes, tmp_path / "sim.tif", points=[(x[0], y[0])])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif", "classes.tif.aux.xml"]
