"""`python -m engine evaluate --raster --points`: query modes side by side at labelled points of a synthetic world."""
from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from engine.errors import GAIRError


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs tiny models on one torch thread."""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from engine.pretrain.synthetic import WorldSpec, make_world

    return make_world(tmp_path_factory.mktemp("world"), WorldSpec(size_px=256, n_photos=1, n_labels=100, seed=2))


def labels_layer(world, path: Path, blank_every: int = 0) -> Path:
    """The world's label points as a GeoPackage with a `class` field (every n-th one left blank)."""
    import shapely

    from engine.io.vectors import write_gpkg

    with open(world.labels_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    geoms = np.array([shapely.Point(float(r["lon"]), float(r["lat"])) for r in rows], dtype=object)
    classes = np.array([None if blank_every and i % blank_every == 0 else r["label"] for i, r in enumerate(rows)],
                       dtype=object)
    return write_gpkg(path, geoms, {"class": classes}, "EPSG:4326", layer="labels")


@pytest.fixture(scope="module")
def tiny_model():
    import torch

    import engine

    torch.manual_seed(0)
    return engine.GAIRModel(engine.GAIRConfig.tiny()).eval()


def test_point_features_follow_the_points_pipeline(world, tiny_model, tmp_path) -> None:
    from engine.evaluate.points import point_features, read_embeddings
    from engine.pipeline import embed_features

    layer = labels_layer(world, tmp_path / "labels.gpkg", blank_every=10)
    features, labels, coords, skipped = point_features(tiny_model, world.raster, layer, "class")
    assert set(features) == {"nili", "bilinear", "bicubic", "mean"}
    assert skipped["unlabelled"] == 10 and len(labels) == 100 - 10 - skipped["no embedding"]
    assert all(v.shape == (len(labels), 32) and np.isfinite(v).all() for v in features.values())
    # the NILI rows are embed-points' own vectors, in the order of the labelled features
    embed_features(world.raster, layer, tmp_path / "nili.gpkg", tiny_model, polygons="centroid")
    vectors, status = read_embeddings(tmp_path / "nili.gpkg")
    keep = np.arange(100) % 10 != 0
    np.testing.assert_allclose(features["nili"], vectors[keep & (status == "ok")], rtol=1e-6)
    assert not np.allclose(features["nili"], features["bilinear"])
    assert not np.allclose(features["mean"], features["bicubic"])
    # coordinates in metres (UTM 32N): the label points span most of the 2.56 km world
    span = coords.max(axis=0) - coords.min(axis=0)
    assert (span > 1500).all() and (span < 2600).all()


def test_points_report_compares_the_query_modes_on_both_splits(world, tiny_model, tmp_path) -> None:
    from engine.evaluate import ProtocolConfig, evaluate_points

    layer = labels_layer(world, tmp_path / "labels.gpkg")
    config = ProtocolConfig(splits=("random", "blocks"), block_size=600.0, folds=3, repeats=1)
    report = evaluate_points(world.raster, layer, tmp_path / "eval", tiny_model, config=config)
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved["task"] == "points" and saved["method_names"] == ["nili", "bilinear", "bicubic", "crop_mean"]
    assert saved["results"] == report["results"]
    for split in ("random", "blocks"):
        methods = saved["results"][split]["methods"]
        assert set(methods) == {"nili", "bilinear", "bicubic", "crop_mean"}
        for curves in methods.values():
            assert [p["fraction"] for p in curves["linear"]] == [0.01, 0.05, 0.10, 1.0]
        # even a random tiny encoder separates these spectra well above the majority class
        assert methods["nili"]["linear"][-1]["accuracy"] > saved["chance"] + 0.2, methods["nili"]["linear"]
    html = (tmp_path / "eval" / "report.html").read_text()
    for name in ("nili", "bilinear", "bicubic", "crop_mean", "kNN"):
        assert name in html
    start = html.index("<svg")
    ET.fromstring(html[start:html.index("</svg>", start) + 6])  # well-formed inline SVG


def test_points_errors_name_the_problem(world, tiny_model, tmp_path) -> None:
    from engine.evaluate import ProtocolConfig, evaluate_points

    layer = labels_layer(world, tmp_path / "labels.gpkg")
    with pytest.raises(GAIRError, match="no field 'landcover'"):
        evaluate_points(world.raster, layer, tmp_path / "eval", tiny_model, class_field="landcover")
    with pytest.raises(GAIRError, match="query modes"):
        evaluate_points(world.raster, layer, tmp_path / "eval", tiny_model, modes=("nearest",))
    with pytest.raises(GAIRError, match="block size"):
        ProtocolConfig(splits=("blocks",))
    assert not (tmp_path / "eval").exists()
