"""CSP's few-label protocol (`python -m engine evaluate --location`) on the synthetic world, and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import GAIRError

# High Fourier scales: the synthetic world is 2.56 km wide, so the official (1, 16, 256) would see one smooth blob.
SIGMAS = (2.0**12, 2.0**14, 2.0**16)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from engine.pretrain.synthetic import WorldSpec, make_world

    return make_world(tmp_path_factory.mktemp("world"), WorldSpec(size_px=256, n_photos=1, n_labels=160, seed=4))


def world_points(world, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n random [lon, lat] in the world with the land-cover class under each."""
    import rasterio
    from pyproj import Transformer

    with rasterio.open(world.landcover) as ds:
        b = ds.bounds
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(b.left, b.right, n), rng.uniform(b.bottom, b.top, n)
    lon, lat = Transformer.from_crs(world.spec.truth_crs, "EPSG:4326", always_xy=True).transform(x, y)
    lonlat = np.column_stack([lon, lat])
    return lonlat, world.class_at(lonlat)


@pytest.fixture(scope="module")
def pretrained_model(world):
    """A tiny model whose location encoder was trained (a stand-in for CSP pretraining) to predict land cover at
    1000 points of the world that are not the evaluation's label points."""
    import torch

    import engine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = engine.GAIRModel(engine.GAIRConfig.tiny(loc_sigmas=SIGMAS))
    lonlat, classes = world_points(world, 1000, seed=11)
    head = torch.nn.Linear(model.config.embed_dim, 5)
    optimizer = torch.optim.Adam([*model.location_encoder.parameters(), *head.parameters()], lr=3e-3)
    x, y = torch.as_tensor(lonlat), torch.as_tensor(classes)
    for _ in range(100):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(head(model.location_encoder(x).float()), y).backward()
        optimizer.step()
    torch.set_num_threads(threads)
    return model.eval()


def test_probe_reports_the_gain_of_pretraining_at_each_label_ratio(world, pretrained_model, tmp_path,
                                                                   one_torch_thread) -> None:
    from engine.evaluate import ProtocolConfig, evaluate_location

    config = ProtocolConfig(fractions=(0.05, 0.10, 0.20, 0.50, 1.0), folds=3, repeats=2)
    report = evaluate_location(world.labels_csv, tmp_path / "eval", pretrained_model, config=config)
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved["task"] == "location" and saved["encoder"] == "gair" and saved["method"] == "probe"
    assert saved["n_samples"] == 160 and saved["method_names"] == ["pretrained", "random"]
    methods = saved["results"]["random"]["methods"]
    for classifier in ("linear", "knn"):
        pre, rnd = methods["pretrained"][classifier], methods["random"][classifier]
        gain = saved["gain"]["random"][classifier]
        assert [p["fraction"] for p in gain] == [0.05, 0.10, 0.20, 0.50, 1.0]
        for p, r, g in zip(pre, rnd, gain):
            assert g["gain"] == pytest.approx(p["accuracy"] - r["accuracy"])
            assert g["gain"] > 0.15, (classifier, gain)  # the trained encoder holds the land-cover map
        assert pre[-1]["accuracy"] > pre[0]["accuracy"]  # more labels help
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "Gain of the pretrained encoder" in html and "pretrained" in html and "random" in html
    assert report["paths"]["html"].endswith("report.html")


def test_finetune_and_gridcell_encoders_and_spatial_blocks(world, pretrained_model, tmp_path,
                                                           one_torch_thread) -> None:
    from engine.evaluate import ProtocolConfig, evaluate_location
    from engine.pretrain.csp import GridCellConfig, GridCellEncoder, save_gridcell

    config = ProtocolConfig(splits=("blocks",), block_size=800.0, fractions=(0.2, 1.0), folds=3, repeats=1)
    tuned = evaluate_location(world.labels_csv, tmp_path / "ft", pretrained_model, method="finetune", epochs=15,
                              config=config)
    curves = tuned["results"]["blocks"]["methods"]
    assert set(curves["pretrained"]) == {"finetune"} and tuned["finetune"]["epochs"] == 15
    assert curves["pretrained"]["finetune"][-1]["accuracy"] > curves["random"]["finetune"][-1]["accuracy"]
    assert tuned["results"]["blocks"]["folds"] == 3

    save_gridcell(GridCellEncoder(GridCellConfig(embed_dim=16, hidden=32, layers=1)), tmp_path / "csp")
    grid = evaluate_location(world.labels_csv, tmp_path / "gc", None, encoder="gridcell",
                             gridcell=tmp_path / "csp", config=ProtocolConfig(fractions=(1.0,), folds=2))
    assert grid["encoder"] == "gridcell" and set(grid["gain"]["random"]) == {"linear", "knn"}
    with pytest.raises(GAIRError, match="--gridcell"):
        evaluate_location(world.labels_csv, tmp_path / "x", None, encoder="gridcell")
    with pytest.raises(GAIRError, match="no column"):
        evaluate_location(world.labels_csv, tmp_path / "x", pretrained_model, class_field="landcover")


def test_cli_writes_the_patch_report(tmp_path, capsys) -> None:
    import torch

    import engine
    from engine.cli.main import main
    from tests.test_evaluate_patches import make_eurosat

    torch.manual_seed(0)
    bundle = engine.save_bundle(engine.GAIRModel(engine.GAIRConfig.tiny()), tmp_path / "bundle")
    patches = make_eurosat(tmp_path / "EuroSAT_MS", per_class=6)
    code = main(["evaluate", "--patches", str(patches), "--model", str(bundle), "--output", str(tmp_path / "eval"),
                 "--split", "random,blocks", "--block-size", "4000", "--folds", "3", "--repeats", "1",
                 "--fractions", "10,100", "--modes", "mean", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "crop_mean" in out and "report.html" in out
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["protocol"]["fractions"] == [0.1, 1.0] and set(report["results"]) == {"random", "blocks"}
    assert main(["evaluate", "--output", str(tmp_path / "none"), "--model", str(bundle), "--quiet"]) == 2


def test_cli_location_with_the_csp_encoder_beside_the_model(world, tmp_path, capsys) -> None:
    from engine.cli.main import main
    from engine.pretrain.csp import GridCellConfig, GridCellEncoder, save_gridcell

    save_gridcell(GridCellEncoder(GridCellConfig(embed_dim=16, hidden=32, layers=1)), tmp_path / "run")
    code = main(["evaluate", "--location", "--points", str(world.labels_csv), "--location-encoder", "gridcell",
                 "--model", str(tmp_path / "run"), "--output", str(tmp_path / "eval"), "--fractions", "50,100",
                 "--folds", "2", "--repeats", "1", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "gain random" in out
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["encoder"] == "gridcell" and [g["fraction"] for g in report["gain"]["random"]["linear"]] == [0.5, 1]


def test_labelled_points_read_the_same_from_csv_and_geopackage(world, tmp_path) -> None:
    from engine.evaluate import evaluate
    from engine.evaluate.location import read_labelled_points
    from tests.test_evaluate_points import labels_layer

    lonlat, labels = read_labelled_points(world.labels_csv)
    layer_lonlat, layer_labels = read_labelled_points(labels_layer(world, tmp_path / "l.gpkg"), class_field="class")
    np.testing.assert_allclose(layer_lonlat, lonlat, atol=1e-9)
    assert (layer_labels == labels).all() and len(labels) == 160
    with pytest.raises(GAIRError, match="one evaluation at a time"):
        evaluate(tmp_path / "x", None, patches=tmp_path, location=True, points=world.labels_csv)
