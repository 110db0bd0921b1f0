"""End to end as users get it: the plugin installed from the built zip into a fresh QGIS profile, driven by
`qgis_process run gair:...` in QGIS's OWN Python (no venv on any path, the engine's packages unimportable there), with
the jobs run by the engine's Python (GAIR_ENGINE_PYTHON) in a worker process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.qgis_helpers import ROOT, QgisProcess, QgisProcessError

# What only the engine's environment has: QGIS's Python must never need (or import) any of it
ENGINE_PACKAGES = ("torch", "onnxruntime", "onnx", "rasterio", "sklearn", "pyogrio", "shapely", "pyproj", "scipy",
                   "safetensors", "skops", "engine")
BLOCKER = '''
import sys


class _Blocked:
    """Makes these packages look uninstalled (find_spec and import both fail), as on a bare QGIS."""

    names = {names!r}

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _Blocked())
'''


def write_blocker(folder: Path, blocked: tuple[str, ...]) -> Path:
    """A folder whose sitecustomize.py hides `blocked` from the Python that has the folder on PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCKER.format(names=set(blocked)))
    return folder


def engine_python(folder: Path, blocked: tuple[str, ...] = ()) -> Path:
    """An engine Python for GAIR_ENGINE_PYTHON: the project venv's Python running this checkout's engine (the zip's
    plugin gives the worker no path; an installed engine would be another copy), optionally without `blocked`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [str(write_blocker(folder / "blocker", blocked))] if blocked else []
    script = folder / "engine-python"
    script.write_text(f'#!/bin/sh\nPYTHONPATH="{os.pathsep.join([*paths, str(ROOT)])}" exec "{sys.executable}" "$@"\n')
    script.chmod(0o755)
    return script


class QgisOwnPython(QgisProcess):
    """qgis_process with nothing but QGIS's own Python: no venv path on PYTHONPATH, the engine's packages blocked
    (should the system have some), and the engine's Python named by GAIR_ENGINE_PYTHON (or none at all)."""

    def __init__(self, config_dir: Path, engine: Path | None) -> None:
        super().__init__(config_dir)
        self.engine = engine
        self.blocker_dir = write_blocker(self.config_dir / "blocker", ENGINE_PACKAGES)

    def env(self) -> dict[str, str]:
        env = super().env()
        env["PYTHONPATH"] = str(self.blocker_dir)  # replaces the venv's site-packages
        env.pop("GAIR_ENGINE_PYTHON", None)
        if self.engine is not None:
            env["GAIR_ENGINE_PYTHON"] = str(self.engine)
        return env


@pytest.fixture(scope="module")
def own_python_qgis(plugin_zip, tmp_path_factory) -> QgisOwnPython:
    folder = tmp_path_factory.mktemp("own_python")
    runner = QgisOwnPython(folder / "profile", engine_python(folder / "engine"))
    runner.install_plugin_zip(plugin_zip)
    runner.enable_plugin("gair_qgis")
    return runner


def read(path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as dataset:
        return dataset.read()


def test_qgis_own_python_has_no_engine_packages(own_python_qgis):
    env = own_python_qgis.env()
    assert ".venv" not in env["PYTHONPATH"] and str(ROOT) not in env["PYTHONPATH"]
    probe = subprocess.run(["/usr/bin/python3", "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr


def test_embed_then_similarity_in_qgis_own_python_match_the_engine(own_python_qgis, tiny_bundle, sample_raster,
                                                                   tmp_path):
    import engine
    from engine.analysis import similarity_search

    runner = own_python_qgis
    assert runner.plugins()["gair_qgis"] is True
    ids = set(runner.algorithm_ids("gair"))
    assert {"gair:embed_raster", "gair:similarity_search", "gair:train_classifier", "gair:export_onnx"} <= ids

    embedded = runner.run_algorithm("gair:embed_raster", INPUT=sample_raster, MODEL=tiny_bundle,
                                    OUTPUT=tmp_path / "embedding.tif")
    assert Path(embedded["OUTPUT"]).is_file() and Path(embedded["QUICKLOOK"]).is_file()
    direct = engine.embed_raster(sample_raster, tmp_path / "direct.tif", str(tiny_bundle))
    toolbox_values, direct_values = read(embedded["OUTPUT"]).astype(int), read(direct).astype(int)
    assert toolbox_values.shape == direct_values.shape and toolbox_values.shape[0] == 32  # int8, all 32 dims
    assert np.abs(toolbox_values - direct_values).max() <= 1  # the same engine call (int8 rounding aside)

    # the point is given in Web Mercator: qgis_process reprojects it to the raster's CRS
    result = runner.run_algorithm("gair:similarity_search", INPUT=embedded["OUTPUT"],
                                  POINT="-9269780.0,5232330.0 [EPSG:3857]", TOP_K=3,
                                  OUTPUT=tmp_path / "similarity.tif", TOP_K_OUTPUT=tmp_path / "top.gpkg")
    import pyogrio
    from pyproj import Transformer

    values = read(result["OUTPUT"])[0]
    assert abs(float(np.nanmax(values)) - 1.0) < 1e-5  # the reference pixel itself
    x, y = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True).transform(-9269780.0, 5232330.0)
    reference = similarity_search(embedded["OUTPUT"], tmp_path / "direct_similarity.tif", points=[(x, y)],
                                  top_k=3, hits_path=tmp_path / "direct_top.gpkg")
    np.testing.assert_allclose(values, read(reference.path)[0], atol=1e-5, equal_nan=True)
    assert (tmp_path / "similarity.qml").is_file()  # styled for whoever opens it next
    assert pyogrio.read_info(result["TOP_K_OUTPUT"], layer="similar_places")["features"] == 3


def test_runs_on_onnxruntime_in_an_engine_without_torch(plugin_zip, tiny_bundle, sample_raster, tmp_path):
    from engine.model.onnx_export import export_onnx

    export = export_onnx(str(tiny_bundle), tmp_path / "onnx")
    runner = QgisOwnPython(tmp_path / "profile", engine_python(tmp_path / "engine", blocked=("torch",)))
    runner.install_plugin_zip(plugin_zip)
    runner.enable_plugin("gair_qgis")
    result = runner.run_algorithm("gair:embed_raster", INPUT=sample_raster, MODEL=export,
                                  OUTPUT=tmp_path / "embedding.tif")
    import rasterio

    with rasterio.open(result["OUTPUT"]) as dataset:
        fingerprint = dataset.tags()["GAIR_MODEL"]
    assert fingerprint == json.loads((Path(export) / "config.json").read_text())["fingerprint"]


def test_without_an_engine_the_plugin_loads_and_says_how_to_set_one_up(plugin_zip, tiny_bundle, sample_raster,
                                                                       tmp_path):
    runner = QgisOwnPython(tmp_path / "profile", engine=None)
    runner.install_plugin_zip(plugin_zip)
    runner.enable_plugin("gair_qgis")
    assert runner.plugins()["gair_qgis"] is True  # loaded, provider registered
    assert "gair:embed_raster" in runner.algorithm_ids("gair")
    with pytest.raises(QgisProcessError) as error:
        runner.run_algorithm("gair:embed_raster", INPUT=sample_raster, MODEL=tiny_bundle,
                             OUTPUT=tmp_path / "embedding.tif")
    message = str(error.value)
    assert "no GAIR engine is set up" in message and "Set up engine" in message and "GAIR_ENGINE_PYTHON" in message
    assert "Traceback" not in message
    assert not (tmp_path / "embedding.tif").exists()


# Run by the QGIS Python (the venv's: torch, rasterio... importable, so only the plugin's restraint keeps them out):
# load the zip's plugin, run gair:embed_raster, report what the process imported.
MODULES_SCRIPT = '''
import json, sys
plugins, raster, model, output, result = sys.argv[1:6]
sys.path.insert(0, plugins)
sys.path.append("/usr/share/qgis/python/plugins")
from qgis.core import QgsApplication
app = QgsApplication([], False)
app.initQgis()
from processing.core.Processing import Processing
Processing.initialize()
import gair_qgis
plugin = gair_qgis.classFactory(None)
plugin.initProcessing()
import processing
out = processing.run("gair:embed_raster", {"INPUT": raster, "MODEL": model, "OUTPUT": output})
with open(result, "w") as handle:
    json.dump({"output": out["OUTPUT"], "modules": sorted(sys.modules)}, handle)
'''


def test_the_qgis_process_imports_nothing_of_the_engine_but_its_contract(plugin_zip, tiny_bundle, sample_raster,
                                                                         tmp_path):
    from tests.qgis_helpers import unzip_plugin
    from tests.test_architecture import PLUGIN_CONTRACT

    plugins = tmp_path / "plugins"
    unzip_plugin(plugin_zip, plugins)
    (tmp_path / "run.py").write_text(MODULES_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GAIR_ENGINE_PYTHON")}
    env.update(GAIR_ENGINE_PYTHON=str(engine_python(tmp_path / "engine")), QT_QPA_PLATFORM="offscreen",
               QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profile"))
    done = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(plugins), str(sample_raster),
                           str(tiny_bundle), str(tmp_path / "embedding.tif"), str(tmp_path / "result.json")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert Path(result["output"]).is_file() and read(result["output"]).shape[0] == 32
    modules = set(result["modules"])
    heavy = sorted(m for m in modules if m.split(".")[0] in ENGINE_PACKAGES)
    assert not heavy, f"QGIS's Python imported {heavy}"
    contract = {name.replace("engine", "gair_qgis._engine", 1) for name in PLUGIN_CONTRACT}
    packages = {"gair_qgis._engine", "gair_qgis._engine.io", "gair_qgis._engine.service"}
    engine_modules = {m for m in modules if m.startswith("gair_qgis._engine")}
    outside = sorted(m for m in engine_modules
                     if m not in contract | packages and not any(m.startswith(c + ".") for c in contract))
    assert not outside, f"QGIS's Python imported engine modules outside the contract: {outside}"
    assert "gair_qgis._engine.service.local" in engine_modules  # the job went through the worker client
