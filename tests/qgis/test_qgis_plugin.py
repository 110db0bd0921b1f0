"""Plugin shell: loading, provider registration, dependency messages, settings, styling helpers, feedback bridge."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from qgis.core import (
    QgsApplication,
    QgsPalettedRasterRenderer,
    QgsProcessingFeedback,
    QgsRasterLayer,
    QgsSingleBandPseudoColorRenderer,
)

import gair_qgis
from gair_qgis import deps
from gair_qgis.toolbox.base import EngineBridge


def test_plugin_registers_and_unregisters_provider(qgis_iface, qgis_processing):
    registry = QgsApplication.processingRegistry()
    if registry.providerById("gair") is not None:  # registered by another test's fixture
        registry.removeProvider("gair")
    plugin = gair_qgis.classFactory(qgis_iface)
    plugin.initGui()
    try:
        provider = QgsApplication.processingRegistry().providerById("gair")
        assert provider is not None
        groups = {alg.groupId() for alg in provider.algorithms()}
        assert groups <= {"embeddings", "analysis", "model"}
        for alg in provider.algorithms():
            assert alg.shortHelpString(), f"{alg.id()} has no help text"
            assert alg.id().startswith("gair:")
        assert [a.text() for a in plugin.actions] == ["GAIR similarity map tool", "GAIR settings…",
                                                      "Style as Sentinel-2 true colour"]
        tool_action = plugin.actions[0]
        tool_action.setChecked(True)  # the toolbar button opens the dock and arms the map tool
        assert plugin.dock is not None and qgis_iface.mapCanvas().mapTool() is plugin.dock.tool
        tool_action.setChecked(False)
        assert qgis_iface.mapCanvas().mapTool() is not plugin.dock.tool
    finally:
        plugin.unload()
    assert QgsApplication.processingRegistry().providerById("gair") is None


def test_missing_backends_message_gives_exact_pip_command(monkeypatch):
    monkeypatch.setattr(deps, "has_module", lambda name: name not in ("torch", "onnxruntime"))
    message = deps.missing_dependency_message()
    assert message is not None and "Neither is installed." in message
    assert f'"{deps.python_executable()}" -m pip install onnxruntime' in message
    assert "torch" in message


def test_torch_missing_is_fine_with_onnxruntime(monkeypatch):
    monkeypatch.setattr(deps, "has_module", lambda name: name != "torch")
    assert deps.missing_dependency_message() is None


def test_missing_required_package_is_named(monkeypatch):
    monkeypatch.setattr(deps, "has_module", lambda name: name != "rasterio")
    message = deps.missing_dependency_message()
    assert "rasterio" in message and "-m pip install rasterio" in message


def test_python_executable_is_an_interpreter():
    exe = deps.python_executable()
    assert "python" in exe.lower()
    if sys.executable and "python" in sys.executable.lower():
        assert exe == sys.executable


def test_bridge_maps_progress_and_cancel():
    feedback = QgsProcessingFeedback()
    seen = []
    feedback.progressChanged.connect(seen.append)
    bridge = EngineBridge(feedback, 0.5, 1.0)
    bridge.progress(0.5)
    bridge.progress(2.0)
    assert seen == [75.0, 100.0]
    assert not bridge.cancel()
    feedback.cancel()
    assert bridge.cancel()


def test_settings_round_trip_and_model_path_normalisation(tmp_path):
    from gair_qgis.settings import GAIRSettings, normalise_model_path

    old = GAIRSettings.load()
    try:
        GAIRSettings(str(tmp_path), "onnx", "cpu").save()
        assert GAIRSettings.load() == GAIRSettings(str(tmp_path), "onnx", "cpu")
    finally:
        old.save()
    assert normalise_model_path(str(tmp_path / "bundle" / "config.json")) == str(tmp_path / "bundle")
    assert normalise_model_path("") is None


@pytest.fixture
def small_raster(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path / "classes.tif"
    data = np.arange(12, dtype=np.float32).reshape(1, 3, 4) / 11.0
    with rasterio.open(path, "w", driver="GTiff", width=4, height=3, count=1, dtype="float32",
                       crs="EPSG:32617", transform=from_origin(500000, 4700000, 10, 10)) as ds:
        ds.write(data)
    layer = QgsRasterLayer(str(path), "r", "gdal")
    assert layer.isValid()
    return layer


def test_paletted_renderer_carries_class_names(small_raster):
    from gair_qgis.styling import paletted_renderer, save_default_style

    paletted_renderer(small_raster, [(1, "water"), (2, "forest"), (3, "urban")])
    renderer = small_raster.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    assert [c.label for c in renderer.classes()] == ["water", "forest", "urban"]
    assert len({c.color.name() for c in renderer.classes()}) == 3
    save_default_style(small_raster)
    reopened = QgsRasterLayer(small_raster.source(), "again", "gdal")
    assert isinstance(reopened.renderer(), QgsPalettedRasterRenderer)
    assert [c.label for c in reopened.renderer().classes()] == ["water", "forest", "urban"]


def test_similarity_ramp_makes_similar_stand_out_and_threshold_hides(small_raster):
    from gair_qgis.styling import band_range, similarity_renderer

    vmin, vmax = band_range(small_raster)
    assert (vmin, vmax) == pytest.approx((0.0, 1.0))
    renderer = similarity_renderer(small_raster, vmin, vmax)
    assert isinstance(renderer, QgsSingleBandPseudoColorRenderer)
    items = renderer.shader().rasterShaderFunction().colorRampItemList()
    assert items[0].color.alpha() < items[-1].color.alpha() == 255  # dissimilar fades, similar is opaque
    similarity_renderer(small_raster, vmin, vmax, threshold=0.5)
    ramp = small_raster.renderer().shader().rasterShaderFunction()
    assert ramp.clip() and ramp.minimumValue() == pytest.approx(0.5)


def test_plugin_without_any_runtime_loads_and_shows_the_pip_command(qgis_iface, qgis_processing, monkeypatch):
    from qgis.core import Qgis
    from qgis.PyQt.QtWidgets import QPushButton

    from gair_qgis import messages

    registry = QgsApplication.processingRegistry()
    if registry.providerById("gair") is not None:
        registry.removeProvider("gair")
    monkeypatch.setattr(deps, "has_module", lambda name: name not in ("torch", "onnxruntime"))
    bar = qgis_iface.messageBar()
    bar.clearWidgets()
    plugin = gair_qgis.classFactory(qgis_iface)
    plugin.initGui()
    try:
        assert registry.providerById("gair") is not None  # the toolbox entries are there all the same
        (item,) = bar.items()
        # the bar holds one short sentence; the full text with the install command is behind "Details"
        assert item.level() == Qgis.Warning
        assert item.text() == "GAIR cannot run yet: no model runtime (onnxruntime or torch) is installed."
        (button,) = [b for b in item.findChildren(QPushButton) if b.text() == "Details"]
        button.click()
        box = messages._OPEN_BOXES[-1]
        assert box.isVisible()
        full = box.text()
        assert full == deps.missing_dependency_message()
        # sentences are separated, each command stands alone on its line (copyable)
        paragraphs = full.split("\n\n")
        assert paragraphs[0].startswith("GAIR needs a model runtime: ") and paragraphs[0].endswith(
            ". Neither is installed.")
        torch_command = deps.pip_command(["torch", "safetensors"])
        assert paragraphs[1:] == [f"Install with:\n{deps.pip_command(['onnxruntime'])}",
                                  f"For the official checkpoint, add PyTorch:\n{torch_command}", "Then restart QGIS."]
        box.done(0)
        assert box not in messages._OPEN_BOXES
    finally:
        plugin.unload()
        bar.clearWidgets()


def test_post_processor_styles_and_moves_loaded_layer_into_gair_group(qgis_new_project, small_raster):
    from qgis.core import QgsProcessingContext, QgsProject

    from gair_qgis.styling import paletted_renderer, save_default_style
    from gair_qgis.toolbox.outputs import GroupStylePostProcessor

    paletted_renderer(small_raster, [(1, "a"), (2, "b")])
    save_default_style(small_raster)
    loaded = QgsRasterLayer(small_raster.source(), "loaded", "gdal")
    loaded.setRenderer(QgsSingleBandPseudoColorRenderer(loaded.dataProvider(), 1))  # as if Processing restyled it
    project = QgsProject.instance()
    project.addMapLayer(loaded)
    context = QgsProcessingContext()
    context.setProject(project)
    GroupStylePostProcessor().postProcessLayer(loaded, context, QgsProcessingFeedback())
    group = project.layerTreeRoot().findGroup("GAIR")
    assert [node.layer() for node in group.findLayers()] == [loaded]
    assert project.layerTreeRoot().findLayer(loaded.id()).parent() is group
    assert [c.label for c in loaded.renderer().classes()] == ["a", "b"]


def test_settings_dialog_saves_and_lists_packages(qgis_app, tmp_path):
    from gair_qgis.settings import GAIRSettings
    from gair_qgis.settings_dialog import SettingsDialog

    old = GAIRSettings.load()
    try:
        dialog = SettingsDialog()
        assert "onnxruntime" in dialog.status.text() and "torch" in dialog.status.text()
        dialog.model.setFilePath(str(tmp_path))
        dialog.backend.setCurrentText("onnx")
        dialog.device.setCurrentText("cpu")
        dialog.accept()
        assert GAIRSettings.load() == GAIRSettings(str(tmp_path), "onnx", "cpu")
    finally:
        old.save()


def test_provider_offers_only_the_formats_the_engine_writes(qgis_processing):
    from gair_qgis.toolbox.provider import GAIRProvider

    provider = GAIRProvider()
    assert provider.supportedOutputRasterLayerExtensions() == ["tif"]
    assert provider.supportedOutputVectorLayerExtensions() == ["gpkg"]
    assert (provider.defaultRasterFileExtension(), provider.defaultVectorFileExtension()) == ("tif", "gpkg")
