"""Reports you can defend: on labels that cluster in space, spatial block cross-validation scores below random
k-fold and the report says to trust it; the block size comes from the embeddings' autocorrelation range; the
learning curve is in the JSON, text and HTML reports."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from rasterio.transform import from_origin
from rasterio.windows import Window
from scipy.ndimage import gaussian_filter

from engine.analysis import train_classifier, train_regressor
from engine.analysis.validation import LEARNING_FRACTIONS, autocorrelation_range
from engine.io.embedding_raster import EmbeddingRaster
from engine.io.embedding_writer import EmbeddingRasterWriter
from engine.io.vectors import write_gpkg

SIZE, PIXEL_M, SMOOTH_PX = 160, 10.0, 6.0
CLUSTERS = 16  # a 4 x 4 grid of label clusters, 40 px (400 m) apart


@pytest.fixture(scope="module")
def clustered(tmp_path_factory) -> tuple[Path, Path]:
    """A smooth random embedding field (Gaussian-smoothed noise, so autocorrelated over ~3.5 sigma = 210 m) and
    labels in 16 tight clusters whose class and value are drawn per cluster, unrelated to any global direction of
    the field: a model can only recognise the clusters' own ground, which random folds share and blocks do not."""
    folder = tmp_path_factory.mktemp("validation")
    rng = np.random.default_rng(0)
    field = np.stack([gaussian_filter(rng.normal(size=(SIZE, SIZE)), SMOOTH_PX, mode="wrap") for _ in range(8)])
    field /= field.std()
    block = (field + 0.05 * rng.normal(size=field.shape)).astype(np.float32)
    transform = from_origin(500000.0, 4100000.0, PIXEL_M, PIXEL_M)
    raster = folder / "field.tif"
    with EmbeddingRasterWriter(raster, width=SIZE, height=SIZE, crs="EPSG:32633", transform=transform, dims=8,
                               model="synthetic0000", tile=32) as writer:
        writer.write(Window(0, 0, SIZE, SIZE), block)
    centres = [(20 + 40 * i, 20 + 40 * j) for i in range(4) for j in range(4)]
    cluster_class = rng.permutation(np.repeat(["a", "b"], CLUSTERS // 2))
    cluster_value = rng.normal(size=CLUSTERS)
    rows, cols, classes, values = [], [], [], []
    for k, (r, c) in enumerate(centres):
        for _ in range(12):
            rows.append(r + rng.integers(-3, 4))
            cols.append(c + rng.integers(-3, 4))
            classes.append(cluster_class[k])
            values.append(cluster_value[k] + 0.05 * rng.normal())
    xs, ys = transform * (np.array(cols) + 0.5, np.array(rows) + 0.5)
    labels = write_gpkg(folder / "labels.gpkg", shapely.points(xs, ys),
                        {"cls": np.array(classes, dtype=object), "value": np.array(values)}, "EPSG:32633")
    return raster, labels


def test_the_block_size_is_the_embeddings_autocorrelation_range(clustered):
    raster, _ = clustered
    with EmbeddingRaster(raster) as er:
        found = autocorrelation_range(er, seed=0)
    expected = SMOOTH_PX * PIXEL_M * np.sqrt(4 * np.log(1 / (1 - 0.95)))  # Gaussian correlogram at 95 % of the sill
    assert 0.6 * expected <= found["range_m"] <= 1.6 * expected, (found["range_m"], expected)
    gamma = [b["semivariance"] for b in found["variogram"] if b["pairs"]]
    assert gamma[0] < 0.3 * found["sill"]  # close pixels are alike


def test_spatial_cv_is_below_random_cv_on_clustered_labels_and_is_trusted(clustered, tmp_path):
    raster, labels = clustered
    reports = [tmp_path / "r.json", tmp_path / "r.html", tmp_path / "r.txt"]
    result = train_classifier(raster, labels, "cls", tmp_path / "m.skops", method="logistic", report_paths=reports)
    section = result.report["validation"]
    random, spatial = section["random"]["accuracy"], section["spatial"]["accuracy"]
    assert random > 0.75 and spatial < random - 0.2, (random, spatial)  # spatial: near chance (0.5)
    assert section["random"]["accuracy"] == pytest.approx(result.report["overall_accuracy"])
    assert section["spatial"]["block_source"].startswith("the embeddings' autocorrelation range")
    assert section["spatial"]["blocks"] >= 5 and section["trust"] == "spatial"
    assert "Trust the spatial block estimate" in section["why"] and "overstate" in section["why"]
    assert section["median_neighbour_distance_m"] < section["autocorrelation_range_m"]
    curve = section["learning_curve"]
    assert curve["split"] == "spatial" and [p["fraction"] for p in curve["points"]] == list(LEARNING_FRACTIONS)
    assert curve["points"][-1]["accuracy"] == pytest.approx(spatial)  # 100 % of the labels: the spatial estimate
    assert curve["points"][0]["features"] < curve["points"][-1]["features"]
    saved = json.loads(reports[0].read_text())
    assert saved["validation"]["trust"] == "spatial" and len(saved["validation"]["learning_curve"]["points"]) == 4
    page = reports[1].read_text()
    assert "spatial blocks" in page and "Learning curve" in page and "<svg" in page and "Trust the spatial" in page
    text = reports[2].read_text()
    assert "random k-fold" in text and "learning curve (spatial folds" in text
    from gair_qgis.toolbox.report_log import report_for_log

    log = report_for_log(result.report)  # the toolbox's log shows the same verdict
    assert f"spatial blocks: {spatial:.4f}" in log and section["why"] in log and "Learning curve (spatial" in log


def test_learning_curve_rises_with_labels_under_random_folds(clustered, tmp_path):
    """With spatial CV off (block 0), the curve runs on the random folds, where more labels cover more clusters."""
    raster, labels = clustered
    result = train_classifier(raster, labels, "cls", tmp_path / "m.skops", method="knn", cv_block_km=0)
    section = result.report["validation"]
    assert section["trust"] == "random" and "turned off" in section["spatial"]["unavailable"]
    scores = [p["accuracy"] for p in section["learning_curve"]["points"]]
    assert section["learning_curve"]["split"] == "random"
    assert scores[-1] > scores[0] + 0.1 and all(b >= a - 0.05 for a, b in zip(scores, scores[1:])), scores


def test_regressor_report_has_spatial_cv_and_a_given_block_size(clustered, tmp_path):
    raster, labels = clustered
    result = train_regressor(raster, labels, "value", tmp_path / "m.skops", method="ridge", cv_block_km=0.8,
                             learning_curve=False)
    section = result.report["validation"]
    assert section["metric"] == "r2" and section["spatial"]["block_source"] == "given"
    assert section["spatial"]["block_m"] == pytest.approx(800.0)
    assert section["random"]["r2"] > section["spatial"]["r2"] + 0.3
    assert "learning_curve" not in section
    one_block = train_regressor(raster, labels, "value", tmp_path / "n.skops", method="ridge", cv_block_km=50,
                                learning_curve=False).report["validation"]
    assert "fall in one block of 50000 m" in one_block["spatial"]["unavailable"] and one_block["trust"] == "random"
