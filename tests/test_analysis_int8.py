"""Every analysis reads int8 (and int16) embedding rasters and agrees with float32 within stated tolerances.

The same planted field is written as float32, int16 and int8. Similarity is scale-free, so int8 maps match float32 to
the rounding (max |difference| <= 0.02); k-means and classifiers see unit vectors from int8, so their labels are
compared with the planted truth and with float32 by agreement, not equality.
"""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from sklearn.metrics import adjusted_rand_score

from engine.analysis import apply_model, cluster_embeddings, similarity_search, train_classifier
from engine.analysis.similarity import _peaks_in_memory, _top_peaks
from engine.analysis.synthetic import labelled_points, make_planted_raster, pixel_xy
from engine.io.embedding_raster import EmbeddingRaster
from engine.io.vectors import write_gpkg

DTYPES = ("float32", "int16", "int8")


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8")
    planted = {dtype: make_planted_raster(folder / f"{dtype}.tif", dims=16, n_classes=4, noise=0.5, seed=5,
                                          n_targets=4, dtype=dtype) for dtype in DTYPES}
    rows, cols, labels = labelled_points(planted["float32"], 20, seed=2)
    xs, ys = pixel_xy(planted["float32"], rows, cols)
    write_gpkg(folder / "labels.gpkg", shapely.points(xs, ys), {"cls": np.array(labels).astype(str).astype(object)},
               planted["float32"].crs)
    return planted, folder / "labels.gpkg"


def _read(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_int8_planted_raster_is_int8(rasters):
    planted, _ = rasters
    with EmbeddingRaster(planted["int8"].path) as er:
        assert er.dtype == "int8" and er._ds.tags()["GAIR_ENCODING"] == "int8_unit"


@pytest.mark.parametrize("dtype", ["int16", "int8"])
def test_similarity_on_quantised_rasters_matches_float32(rasters, tmp_path, dtype):
    planted, _ = rasters
    target = planted["float32"].targets[0]
    x, y = pixel_xy(planted["float32"], [target[0]], [target[1]])
    kw = dict(points=[(x[0], y[0])], top_k=4, min_distance_px=5, exclude_radius_px=0, threshold=0.5)
    ref = similarity_search(planted["float32"].path, tmp_path / "f.tif", **kw)
    got = similarity_search(planted[dtype].path, tmp_path / "q.tif", **kw)
    a, b = _read(ref.path), _read(got.path)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    ok = np.isfinite(a)
    assert np.abs(a[ok] - b[ok]).max() < (0.02 if dtype == "int8" else 1e-3)
    assert np.corrcoef(a[ok], b[ok])[0, 1] > 0.9999
    # the same look-alikes: every hit on a planted 3 x 3 patch, each patch found (its best pixel may move by
    # one under rounding), in the same order up to ties
    targets = planted["float32"].targets

    def found(result) -> list[int]:
        return [int(np.abs(targets - (h.row, h.col)).max(axis=1).argmin()) for h in result.hits
                if np.abs(targets - (h.row, h.col)).max(axis=1).min() <= 1]

    assert sorted(found(got)) == sorted(found(ref)) == [0, 1, 2, 3]
    assert got.valid_pixels == ref.valid_pixels


def test_in_memory_peaks_equal_the_filtered_peaks(rasters, tmp_path):
    """The fast best-first peak search finds the same peaks, in the same order, as the maximum-filter one."""
    planted, _ = rasters
    target = planted["float32"].targets[1]
    x, y = pixel_xy(planted["float32"], [target[0]], [target[1]])
    sim_path = similarity_search(planted["int8"].path, tmp_path / "s.tif", points=[(x[0], y[0])], top_k=0).path
    sim = _read(sim_path)
    sim[40:44, 60:64] = sim[40, 60]  # a plateau: ties must break the same way
    with EmbeddingRaster(planted["int8"].path) as er, rasterio.open(sim_path, "r+") as ds:
        ds.write(sim, 1)
        for top_k, r, threshold in ((10, 5, None), (30, 3, 0.2), (3, 8, 0.9), (500, 2, None)):
            excluded = np.array([[target[0], target[1]]])
            want = [(h.score, h.row, h.col) for h in _top_peaks(er, sim_path, top_k, r, threshold, excluded, r)]
            got = _peaks_in_memory(sim, top_k, r, threshold, excluded, r)
            assert [(row, col) for _, row, col in got] == [(row, col) for _, row, col in want], (top_k, r, threshold)
            np.testing.assert_allclose([s for s, _, _ in got], [s for s, _, _ in want])


def test_kmeans_on_int8_finds_the_planted_classes_like_float32(rasters, tmp_path):
    planted, _ = rasters
    truth = planted["float32"].classes
    labels = {}
    for dtype in DTYPES:
        labels[dtype] = _read(cluster_embeddings(planted[dtype].path, tmp_path / f"{dtype}.tif", k=4,
                                                 sample_size=3000, seed=0).path)
        assert ((labels[dtype] == 0) == (truth < 0)).all()  # nodata stays nodata
    ok = truth >= 0
    assert adjusted_rand_score(labels["float32"][ok], labels["int16"][ok]) > 0.99
    assert adjusted_rand_score(truth[ok], labels["float32"][ok]) > 0.9
    assert adjusted_rand_score(truth[ok], labels["int8"][ok]) > 0.9
    assert adjusted_rand_score(labels["float32"][ok], labels["int8"][ok]) > 0.9


def test_classifier_on_int8_is_as_accurate_as_float32(rasters, tmp_path):
    planted, labels_path = rasters
    truth = planted["float32"].classes
    accuracy, maps = {}, {}
    for dtype in ("float32", "int8"):
        result = train_classifier(planted[dtype].path, labels_path, "cls", tmp_path / f"{dtype}.joblib", folds=4)
        accuracy[dtype] = result.report["overall_accuracy"]
        applied = apply_model(planted[dtype].path, tmp_path / f"{dtype}.joblib", tmp_path / f"{dtype}_cls.tif")
        maps[dtype] = _read(applied.path)
        assert ((maps[dtype] == 0) == (truth < 0)).all()
    assert accuracy["float32"] > 0.9 and abs(accuracy["int8"] - accuracy["float32"]) <= 0.05
    ok = truth >= 0
    assert np.mean(maps["int8"][ok] == maps["float32"][ok]) > 0.95


def test_a_model_is_applied_only_to_the_encoding_it_was_trained_on(rasters, tmp_path):
    """int8 rasters hold unit vectors: a model trained on float32 vectors (or the reverse) is refused, int16 (the
    same vectors as float32) is accepted."""
    from engine import GAIRError

    planted, labels_path = rasters
    train_classifier(planted["float32"].path, labels_path, "cls", tmp_path / "f.joblib", folds=2)
    train_classifier(planted["int8"].path, labels_path, "cls", tmp_path / "q.joblib", folds=2)
    with pytest.raises(GAIRError, match="trained on float32/int16 embeddings but int8.tif stores int8"):
        apply_model(planted["int8"].path, tmp_path / "f.joblib", tmp_path / "x.tif")
    with pytest.raises(GAIRError, match="trained on int8 \\(unit-length\\) embeddings"):
        apply_model(planted["float32"].path, tmp_path / "q.joblib", tmp_path / "x.tif")
    assert apply_model(planted["int16"].path, tmp_path / "f.joblib", tmp_path / "ok.tif").counts


def test_in_memory_peaks_on_a_ramp_visit_everything_and_find_the_one_peak():
    """A smooth ramp has one local maximum: the search must look at every pixel (in bounded batches) to be sure."""
    rows, cols = np.mgrid[0:300, 0:400]
    ramp = (rows + cols).astype(np.float32) / 700
    ramp[:3, :3] = np.nan
    assert [(r, c) for _, r, c in _peaks_in_memory(ramp, 10, 5, None)] == [(299, 399)]
    assert _peaks_in_memory(ramp, 10, 5, 2.0) == []  # nothing reaches the threshold
