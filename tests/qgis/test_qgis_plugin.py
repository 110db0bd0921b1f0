"""Plugin shell: loading, provider registration, the "engine not set up" note, settings, styling helpers, feedback
bridge."""
from __future__ import annotations

import os
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
        assert [a.text() for a in plugin.actions] == ["GAIR similarity map tool", "GAIR settings…", "Set up engine…",
                                                      "Style as Sentinel-2 true colour"]
        tool_action = plugin.actions[0]
        tool_action.setChecked(True)  # the toolbar button opens the dock and arms the map tool
        assert plugin.dock is not None and qgis_iface.mapCanvas().mapTool() is plugin.dock.tool
        tool_action.setChecked(False)
        assert qgis_iface.mapCanvas().mapTool() is not plugin.dock.tool
    finally:
        plugin.unload()
    assert QgsApplication.processingRegistry().providerById("gair") is None


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


@pytest.fixture
def no_engine(qgis_app, monkeypatch, tmp_path):
    """No engine anywhere: no GAIR_ENGINE_PYTHON, no engine Python or URL in the settings, no profile venv."""
    from qgis.core import QgsSettings

    from gair_qgis import engine_jobs

    monkeypatch.delenv(engine_jobs.ENGINE_PYTHON_ENV, raising=False)
    monkeypatch.setattr(engine_jobs, "profile_engine_dir", lambda: str(tmp_path / "gair_engine"))
    settings = QgsSettings()
    old = {key: settings.value(key, "", type=str) for key in (engine_jobs.PYTHON_KEY, engine_jobs.URL_KEY)}
    for key in old:
        settings.setValue(key, "")
    yield
    for key, value in old.items():
        settings.setValue(key, value)


def test_plugin_without_an_engine_loads_and_offers_set_up(qgis_iface, qgis_processing, no_engine, monkeypatch):
    from qgis.core import Qgis
    from qgis.PyQt.QtWidgets import QPushButton

    from gair_qgis import plugin as plugin_module

    registry = QgsApplication.processingRegistry()
    if registry.providerById("gair") is not None:
        registry.removeProvider("gair")
    opened = []
    monkeypatch.setattr(plugin_module.GAIRPlugin, "show_setup", lambda self: opened.append(True))
    bar = qgis_iface.messageBar()
    bar.clearWidgets()
    plugin = gair_qgis.classFactory(qgis_iface)
    plugin.initGui()
    try:
        assert registry.providerById("gair") is not None  # the toolbox entries are there all the same
        (item,) = bar.items()
        assert item.level() == Qgis.Warning
        assert item.text() == "GAIR engine not set up: Plugins > GAIR > Set up engine…"
        (button,) = [b for b in item.findChildren(QPushButton) if b.text() == "Set up engine…"]
        button.click()
        assert opened == [True]
    finally:
        plugin.unload()
        bar.clearWidgets()


def test_plugin_with_an_engine_says_nothing(qgis_iface, no_engine, monkeypatch, tmp_path):
    from gair_qgis import engine_jobs

    plugin = gair_qgis.classFactory(qgis_iface)
    assert plugin.say_when_not_set_up()
    qgis_iface.messageBar().clearWidgets()
    venv_python = engine_jobs.venv_python(str(tmp_path / "gair_engine" / "venv"))  # "Set up engine…" made it
    os.makedirs(os.path.dirname(venv_python))
    open(venv_python, "w").close()
    assert engine_jobs.engine_python() == (venv_python, "the environment GAIR > Set up engine… created")
    assert not plugin.say_when_not_set_up()
    os.remove(venv_python)
    monkeypatch.setenv(engine_jobs.ENGINE_PYTHON_ENV, sys.executable)
    assert not plugin.say_when_not_set_up()
    assert qgis_iface.messageBar().items() == []


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


def test_provider_offers_only_the_formats_the_engine_writes(qgis_processing):
    from gair_qgis.toolbox.provider import GAIRProvider

    provider = GAIRProvider()
    assert provider.supportedOutputRasterLayerExtensions() == ["tif"]
    assert provider.supportedOutputVectorLayerExtensions() == ["gpkg"]
    assert (provider.defaultRasterFileExtension(), provider.defaultVectorFileExtension()) == ("tif", "gpkg")
