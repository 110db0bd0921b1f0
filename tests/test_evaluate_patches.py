"""`python -m engine evaluate --patches`: EuroSAT-format folders, band identity, probe/kNN, splits, the report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.errors import GAIRError

# Surface reflectance x 10000 in EuroSAT-MS file order (B01..B12, then B8A), one spectrum per class.
CLASS_SPECTRA = {
    "Forest": [300, 320, 520, 330, 760, 1900, 2500, 2800, 900, 20, 1500, 720, 2950],
    "River": [800, 700, 650, 420, 330, 260, 220, 170, 100, 10, 110, 90, 160],
    "Industrial": [1200, 1150, 1250, 1350, 1450, 1550, 1650, 1750, 900, 30, 2150, 1950, 1800],
}
UTM_ORIGIN = (600_000.0, 5_400_000.0)


def write_patch(path: Path, data: np.ndarray, x: float, y: float, descriptions=None) -> None:
    import rasterio
    from rasterio.transform import from_origin

    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": "uint16", "crs": "EPSG:32632", "transform": from_origin(x, y, 10.0, 10.0)}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        for i, name in enumerate(descriptions or []):
            ds.set_band_description(i + 1, name)


def make_eurosat(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    """3 classes x per_class 13-band 64 x 64 patches with class spectra, brightness changes, texture and noise,
    spread over a 12 km square of UTM 32N (so spatial blocks hold several patches of several classes)."""
    rng = np.random.default_rng(seed)
    for name, spectrum in CLASS_SPECTRA.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            texture = 1 + 0.3 * rng.standard_normal((1, 64, 64))
            data = np.asarray(spectrum, np.float64)[:, None, None] * rng.uniform(0.4, 1.6) * texture
            data *= 1 + 0.3 * rng.standard_normal(data.shape)
            x, y = UTM_ORIGIN[0] + rng.uniform(0, 12_000), UTM_ORIGIN[1] - rng.uniform(0, 12_000)
            write_patch(root / name / f"{name}_{i + 1}.tif", np.clip(data, 1, 10000).astype(np.uint16), x, y)
    return root


@pytest.fixture(scope="module")
def eurosat(tmp_path_factory) -> Path:
    return make_eurosat(tmp_path_factory.mktemp("eurosat") / "EuroSAT_MS")


@pytest.fixture(scope="module")
def tiny_model():
    import torch

    import engine

    torch.manual_seed(0)
    return engine.GAIRModel(engine.GAIRConfig.tiny()).eval()


def test_eurosat_band_order_puts_b8a_last_and_maps_bands_by_identity(tmp_path) -> None:
    from engine.config import S2_BANDS
    from engine.evaluate.patches import EUROSAT_BAND_ORDER, PatchReader

    assert EUROSAT_BAND_ORDER[8] == "B09" and EUROSAT_BAND_ORDER[-1] == "B8A"
    data = (np.arange(1, 14, dtype=np.uint16) * 100)[:, None, None] * np.ones((1, 64, 64), np.uint16)
    write_patch(tmp_path / "p.tif", data, *UTM_ORIGIN)
    raw, centre, _ = PatchReader(S2_BANDS, EUROSAT_BAND_ORDER, explicit=False).read(tmp_path / "p.tif")
    # model bands B2 B3 B4 B5 B6 B7 B8 B8A B11 B12 = file bands 2..8, 13, 11, 12 (1-based)
    assert raw[:, 0, 0].tolist() == [200, 300, 400, 500, 600, 700, 800, 1300, 1100, 1200]
    assert centre == pytest.approx((UTM_ORIGIN[0] + 320, UTM_ORIGIN[1] - 320))
    # band descriptions naming Sentinel-2 bands win over the documented layout
    names = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
    write_patch(tmp_path / "d.tif", data, *UTM_ORIGIN, descriptions=names)
    raw, _, _ = PatchReader(S2_BANDS, EUROSAT_BAND_ORDER, explicit=False).read(tmp_path / "d.tif")
    assert raw[:, 0, 0].tolist() == [200, 300, 400, 500, 600, 700, 800, 900, 1200, 1300]


def test_bad_patch_folders_raise_clear_errors(tmp_path, tiny_model) -> None:
    from engine.evaluate import evaluate_patches

    (tmp_path / "only").mkdir()
    write_patch(tmp_path / "only" / "a.tif", np.ones((13, 64, 64), np.uint16), *UTM_ORIGIN)
    with pytest.raises(GAIRError, match="class folder"):
        evaluate_patches(tmp_path, tmp_path / "out", tiny_model)
    with pytest.raises(GAIRError, match="does not exist"):
        evaluate_patches(tmp_path / "missing", tmp_path / "out", tiny_model)
    (tmp_path / "other").mkdir()
    write_patch(tmp_path / "other" / "b.tif", np.ones((12, 64, 64), np.uint16), *UTM_ORIGIN)
    with pytest.raises(GAIRError, match="has 12 bands"):
        evaluate_patches(tmp_path, tmp_path / "out", tiny_model)


def test_probe_and_knn_beat_chance_on_both_splits_and_the_report_is_complete(eurosat, tiny_model, tmp_path) -> None:
    from engine.evaluate import ProtocolConfig, evaluate_patches

    config = ProtocolConfig(splits=("random", "blocks"), block_size=3000.0, folds=3, repeats=2, seed=0)
    report = evaluate_patches(eurosat, tmp_path / "eval", tiny_model, config=config)

    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved["results"] == report["results"]
    assert set(saved) >= {"task", "model", "n_samples", "classes", "class_counts", "chance", "method_names",
                          "classifiers", "protocol", "results", "band_order", "seconds"}
    assert saved["n_samples"] == 36 and saved["classes"] == ["Forest", "Industrial", "River"]
    assert saved["chance"] == pytest.approx(1 / 3)
    assert set(saved["results"]) == {"random", "blocks"}
    for split in ("random", "blocks"):
        methods = saved["results"][split]["methods"]
        assert set(methods) == {"crop_mean", "nili_centre"}
        assert sum(saved["results"][split]["test_sizes"]) == 36  # every patch is tested exactly once
        for curves in methods.values():
            for classifier in ("linear", "knn"):
                curve = curves[classifier]
                assert [p["fraction"] for p in curve] == [0.01, 0.05, 0.10, 1.0]
                assert [p["runs"] for p in curve] == [6, 6, 6, 3]  # 3 folds x 2 repeats below 100 %
                assert curve[-1]["n_train"] == pytest.approx(36 * 2 / 3, abs=4)
                assert curve[0]["n_train"] == 3  # 1 % -> one label per class
                assert curve[-1]["accuracy"] >= 0.9, (split, classifier, curve[-1])
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "<svg" in html and "crop_mean" in html and "nili_centre" in html and "linear probe" in html


def test_shuffled_labels_fall_to_chance(eurosat, tiny_model) -> None:
    """The probe scores what the features carry: with labels detached from the patches it must not beat chance."""
    from engine.evaluate.patches import find_patches, patch_features
    from engine.evaluate.protocol import ProtocolConfig, evaluate_features, feature_classifiers

    paths, labels, _ = find_patches(eurosat)
    features, _ = patch_features(tiny_model, paths, ("mean",))
    shuffled = np.random.default_rng(3).permutation(labels)
    config = ProtocolConfig(fractions=(1.0,), folds=4)
    result = evaluate_features({"m": feature_classifiers(features["mean"])}, shuffled, config)
    assert result["random"]["methods"]["m"]["linear"][0]["accuracy"] < 0.6


def test_cancel_stops_before_any_report_is_written(eurosat, tiny_model, tmp_path) -> None:
    from engine.errors import Cancelled
    from engine.evaluate import ProtocolConfig, evaluate_patches

    calls = []

    def cancel() -> bool:  # let feature extraction and a few fits run, then cancel during the protocol
        calls.append(1)
        return len(calls) > 5

    with pytest.raises(Cancelled):
        evaluate_patches(eurosat, tmp_path / "eval", tiny_model, config=ProtocolConfig(folds=2, repeats=1),
                         cancel=cancel)
    assert len(calls) == 6 and not (tmp_path / "eval").exists()
