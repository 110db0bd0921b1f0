"""Classifiers and regressors on planted classes: reports, saved models that know their space, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import shapely

from engine import Cancelled, GAIRError
from engine.analysis import (
    apply_model,
    read_class_names,
    train_classifier,
    train_regressor,
)
from engine.analysis.synthetic import labelled_points, make_planted_raster, pixel_xy
from engine.io.vectors import write_gpkg

NAMES = np.array(["water", "forest", "urban", "crop"], dtype=object)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clf")
    # heavy noise so the classes overlap: a real test of "beats chance by a wide margin", not a trivially separable toy
    planted = make_planted_raster(folder / "planted.tif", dims=16, n_classes=4, noise=0.8, seed=21, n_targets=0)
    rows, cols, labels = labelled_points(planted, 20, seed=2)
    xs, ys = pixel_xy(planted, rows, cols)
    write_gpkg(folder / "labels.gpkg", shapely.points(xs, ys),
               {"landcover": NAMES[labels], "code": labels + 10, "score": planted.score[rows, cols]}, planted.crs)
    return planted, folder / "labels.gpkg"


def _pixel_accuracy(path, planted) -> float:
    with rasterio.open(path) as ds:
        pred = ds.read(1)
    names = read_class_names(path)
    truth = planted.classes >= 0
    predicted_names = np.array(["nodata", *names], dtype=object)[pred[truth]]
    return float(np.mean(predicted_names == NAMES[planted.classes[truth]]))


@pytest.mark.parametrize("method,folds,floor", [("logistic", 5, 0.9), ("knn", 5, 0.85), ("random_forest", 3, 0.85),
                                                ("gradient_boosting", 2, 0.7)])  # chance is 0.25
def test_classifier_beats_chance_on_planted_classes(planted, tmp_path, method, folds, floor):
    planted, labels = planted
    result = train_classifier(planted.path, labels, "landcover", tmp_path / "m.joblib", method=method, folds=folds,
                              report_paths=[tmp_path / "r.json"], output_path=tmp_path / "cls.tif",
                              confidence_path=tmp_path / "conf.tif",
                              learning_curve=method in ("logistic", "knn"))  # the slow fits: once, not 4 times
    report = result.report
    assert report["chance_accuracy"] == 0.25 and report["samples"] == 80 and report["classes"] == sorted(NAMES)
    assert report["overall_accuracy"] > floor and report["macro_f1"] > floor - 0.05
    assert np.sum(report["confusion_matrix"]) == 80 and json.loads((tmp_path / "r.json").read_text()) == report
    assert report["validation"]["random"]["accuracy"] == report["overall_accuracy"]
    assert report["validation"]["spatial"]["accuracy"] > floor - 0.2  # classes are in the vectors, not the places
    assert _pixel_accuracy(tmp_path / "cls.tif", planted) > floor - 0.05
    with rasterio.open(tmp_path / "conf.tif") as ds:
        conf = ds.read(1)
    assert np.isnan(conf[planted.classes < 0]).all()
    valid = conf[planted.classes >= 0]
    assert (valid >= 0.25 - 1e-6).all() and (valid <= 1 + 1e-6).all()
    assert sum(result.applied.counts.values()) == (planted.classes >= 0).sum()


def test_reports_integer_labels_and_polygons(planted, tmp_path):
    planted, labels = planted
    result = train_classifier(planted.path, labels, "code", tmp_path / "m.joblib", folds=3,
                              report_paths=[tmp_path / "r.html", tmp_path / "r.txt"])
    assert result.report["classes"] == ["10", "11", "12", "13"]
    html, text = (tmp_path / "r.html").read_text(), (tmp_path / "r.txt").read_text()
    assert "<table>" in html and "macro F1" in html and "13" in html
    assert "overall accuracy" in text and "truth \\ predicted" in text
    # polygons: every pixel inside is a sample; cross-validation is grouped by polygon
    rows, cols, lab = labelled_points(planted, 6, seed=9)
    xs, ys = pixel_xy(planted, rows, cols)
    squares = shapely.buffer(shapely.points(xs, ys), 15.0, cap_style="square")  # 3x3 pixel centres inside
    write_gpkg(tmp_path / "poly.gpkg", squares, {"landcover": NAMES[lab]}, planted.crs)
    poly = train_classifier(planted.path, tmp_path / "poly.gpkg", "landcover", tmp_path / "p.joblib", folds=3)
    assert poly.report["grouped_by_feature"] and poly.features == 24 and poly.samples == 24 * 9
    assert poly.report["overall_accuracy"] > 0.7


def test_regressor_recovers_planted_score(planted, tmp_path):
    planted, labels = planted
    result = train_regressor(planted.path, labels, "score", tmp_path / "r.joblib", method="ridge",
                             report_paths=[tmp_path / "r.txt"], output_path=tmp_path / "pred.tif")
    assert result.report["r2"] > 0.95 and result.report["rmse"] < 0.25 * result.report["target_std"]
    with rasterio.open(tmp_path / "pred.tif") as ds:
        pred = ds.read(1)
    valid = planted.classes >= 0
    assert np.isnan(pred[~valid]).all()
    assert np.corrcoef(pred[valid], planted.score[valid])[0, 1] > 0.97
    rf = train_regressor(planted.path, labels, "score", tmp_path / "rf.joblib", method="random_forest", folds=2,
                         learning_curve=False)
    assert rf.report["r2"] > 0.3
    applied = apply_model(planted.path, tmp_path / "r.joblib", tmp_path / "again.tif")
    assert applied.counts == {"pixels": int(valid.sum())}
    with pytest.raises(GAIRError, match="numeric"):
        train_regressor(planted.path, labels, "landcover", tmp_path / "x.joblib")


def test_model_refuses_other_embedding_space(planted, tmp_path):
    planted, labels = planted
    train_classifier(planted.path, labels, "landcover", tmp_path / "m.joblib", folds=3)
    other = make_planted_raster(tmp_path / "other.tif", dims=16, seed=21, n_targets=0, model="othermodel")
    with pytest.raises(GAIRError, match=r"made another way than other.tif \(model synthetic0000 vs othermodel\)"):
        apply_model(other.path, tmp_path / "m.joblib", tmp_path / "x.tif")
    narrow = make_planted_raster(tmp_path / "narrow.tif", dims=8, seed=21, n_targets=0)
    with pytest.raises(GAIRError, match="8 dims"):
        apply_model(narrow.path, tmp_path / "m.joblib", tmp_path / "x.tif")
    (tmp_path / "junk.joblib").write_bytes(b"not a model")
    with pytest.raises(GAIRError, match="not a readable"):
        apply_model(planted.path, tmp_path / "junk.joblib", tmp_path / "x.tif")
    assert not (tmp_path / "x.tif").exists()


def test_bad_labels(planted, tmp_path):
    planted, labels = planted
    rows, cols, lab = labelled_points(planted, 3, seed=4)
    xs, ys = pixel_xy(planted, rows, cols)
    write_gpkg(tmp_path / "few.gpkg", shapely.points(xs, ys), {"c": NAMES[lab]}, planted.crs)
    with pytest.raises(GAIRError, match="too few labelled features per class"):
        train_classifier(planted.path, tmp_path / "few.gpkg", "c", tmp_path / "m.joblib", folds=5)
    write_gpkg(tmp_path / "one.gpkg", shapely.points(xs, ys), {"c": np.array(["a"] * len(xs), dtype=object)},
               planted.crs)
    with pytest.raises(GAIRError, match="only one class"):
        train_classifier(planted.path, tmp_path / "one.gpkg", "c", tmp_path / "m.joblib", folds=2)
    # right coordinates, wrong CRS label: lands far outside the raster
    write_gpkg(tmp_path / "wrongcrs.gpkg", shapely.points(xs, ys), {"c": NAMES[lab]}, "EPSG:32610")
    with pytest.raises(GAIRError, match="outside .*EPSG:32610.*EPSG:32633"):
        train_classifier(planted.path, tmp_path / "wrongcrs.gpkg", "c", tmp_path / "m.joblib")
    write_gpkg(tmp_path / "nocrs.gpkg", shapely.points(xs, ys), {"c": NAMES[lab]}, None)
    with pytest.raises(GAIRError, match="no CRS"):
        train_classifier(planted.path, tmp_path / "nocrs.gpkg", "c", tmp_path / "m.joblib")
    with pytest.raises(GAIRError, match="no field 'missing'"):
        train_classifier(planted.path, labels, "missing", tmp_path / "m.joblib")
    with pytest.raises(GAIRError, match="unknown classifier"):
        train_classifier(planted.path, labels, "landcover", tmp_path / "m.joblib", method="svm")
    assert not (tmp_path / "m.joblib").exists()


def test_cancelled_apply_leaves_no_model_or_rasters(planted, tmp_path):
    planted, labels = planted
    calls = iter(range(10**6))
    with pytest.raises(Cancelled):
        train_classifier(planted.path, labels, "landcover", tmp_path / "m.joblib", folds=3,
                         report_paths=[tmp_path / "r.json"], output_path=tmp_path / "c.tif",
                         confidence_path=tmp_path / "conf.tif", block_size=64, cancel=lambda: next(calls) >= 3)
    assert list(tmp_path.iterdir()) == []


def test_classifier_refuses_a_raster_of_another_query_mode(tmp_path):
    """Trained on a NILI raster, applied to a bilinear raster of the same model and image: refused, saying why."""
    import torch

    import engine
    from engine.pipeline import embed_raster

    from .test_pipeline_raster import synthetic_s2, write_raster

    torch.manual_seed(0)
    model = engine.GAIRModel(engine.GAIRConfig.tiny()).eval()
    source = write_raster(tmp_path / "s2.tif", synthetic_s2(64, 64))
    nili = embed_raster(source, tmp_path / "nili.tif", model, quicklook=False)
    bilinear = embed_raster(source, tmp_path / "bilinear.tif", model, mode="bilinear", quicklook=False)
    rng = np.random.default_rng(0)
    xs, ys = 500000.0 + rng.uniform(5, 635, 12), 4500000.0 - rng.uniform(5, 635, 12)
    write_gpkg(tmp_path / "labels.gpkg", shapely.points(xs, ys),
               {"c": np.array(["a", "b"] * 6, dtype=object)}, "EPSG:32633")
    train_classifier(nili, tmp_path / "labels.gpkg", "c", tmp_path / "m.joblib", folds=3)
    assert apply_model(nili, tmp_path / "m.joblib", tmp_path / "ok.tif").counts  # same space: accepted
    with pytest.raises(GAIRError, match="query mode nili vs bilinear"):
        apply_model(bilinear, tmp_path / "m.joblib", tmp_path / "x.tif")
    assert not (tmp_path / "x.tif").exists()
