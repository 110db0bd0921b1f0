"""End to end as users get it: the plugin installed from the built zip into a fresh QGIS profile, driven by
`qgis_process run gair:...`; also with PyTorch (and onnxruntime) made unimportable."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.qgis_helpers import QgisProcess, QgisProcessError

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


class QgisProcessWithout(QgisProcess):
    """qgis_process where some Python packages cannot be imported (a sitecustomize on PYTHONPATH hides them)."""

    def __init__(self, config_dir: Path, blocked: tuple[str, ...]) -> None:
        super().__init__(config_dir)
        self.blocker_dir = self.config_dir / "blocker"
        self.blocker_dir.mkdir(exist_ok=True)
        (self.blocker_dir / "sitecustomize.py").write_text(BLOCKER.format(names=set(blocked)))

    def env(self) -> dict[str, str]:
        env = super().env()
        env["PYTHONPATH"] = os.pathsep.join([str(self.blocker_dir), env["PYTHONPATH"]])
        return env


def test_embed_then_similarity_through_qgis_process(qgis_process_with_plugin, tiny_bundle, sample_raster,
                                                    tmp_path):
    runner = qgis_process_with_plugin
    assert runner.plugins()["gair_qgis"] is True
    ids = set(runner.algorithm_ids("gair"))
    assert {"gair:embed_raster", "gair:similarity_search", "gair:train_classifier", "gair:export_onnx"} <= ids

    embedded = runner.run_algorithm("gair:embed_raster", INPUT=sample_raster, MODEL=tiny_bundle,
                                    OUTPUT=tmp_path / "embedding.tif")
    assert Path(embedded["OUTPUT"]).is_file() and Path(embedded["QUICKLOOK"]).is_file()
    # the point is given in Web Mercator: qgis_process reprojects it to the raster's CRS
    result = runner.run_algorithm("gair:similarity_search", INPUT=embedded["OUTPUT"],
                                  POINT="-9269780.0,5232330.0 [EPSG:3857]", TOP_K=3,
                                  OUTPUT=tmp_path / "similarity.tif", TOP_K_OUTPUT=tmp_path / "top.gpkg")
    import rasterio

    with rasterio.open(result["OUTPUT"]) as dataset:
        assert dataset.crs.to_epsg() == 4326
        values = dataset.read(1)
    assert abs(float(values[~(values != values)].max()) - 1.0) < 1e-5  # the reference pixel itself
    assert (tmp_path / "similarity.qml").is_file()  # styled for whoever opens it next
    import pyogrio

    assert pyogrio.read_info(result["TOP_K_OUTPUT"], layer="similar_places")["features"] == 3


def test_runs_on_onnxruntime_without_torch(plugin_zip, tiny_bundle, sample_raster, tmp_path):
    from engine.model.onnx_export import export_onnx

    export = export_onnx(str(tiny_bundle), tmp_path / "onnx")
    runner = QgisProcessWithout(tmp_path / "profile", blocked=("torch",))
    runner.install_plugin_zip(plugin_zip)
    runner.enable_plugin("gair_qgis")
    result = runner.run_algorithm("gair:embed_raster", INPUT=sample_raster, MODEL=export,
                                  OUTPUT=tmp_path / "embedding.tif")
    import rasterio

    with rasterio.open(result["OUTPUT"]) as dataset:
        fingerprint = dataset.tags()["GAIR_MODEL"]
    assert fingerprint == json.loads((Path(export) / "config.json").read_text())["fingerprint"]


def test_loads_without_torch_and_onnxruntime_and_says_to_set_up_the_engine(plugin_zip, tiny_bundle, sample_raster,
                                                                           tmp_path, monkeypatch):
    """QGIS's Python needs neither torch nor onnxruntime; with no engine anywhere a job says how to get one."""
    monkeypatch.delenv("GAIR_ENGINE_PYTHON", raising=False)
    runner = QgisProcessWithout(tmp_path / "profile", blocked=("torch", "onnxruntime"))
    runner.install_plugin_zip(plugin_zip)
    runner.enable_plugin("gair_qgis")
    assert runner.plugins()["gair_qgis"] is True  # loaded, provider registered
    assert "gair:embed_raster" in runner.algorithm_ids("gair")
    with pytest.raises(QgisProcessError) as error:
        runner.run_algorithm("gair:embed_raster", INPUT=sample_raster, MODEL=tiny_bundle,
                             OUTPUT=tmp_path / "embedding.tif")
    assert "no GAIR engine is set up: use Plugins > GAIR > Set up engine…" in str(error.value)
    assert not (tmp_path / "embedding.tif").exists()
