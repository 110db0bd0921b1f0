"""Fixtures for the plugin tests: a tiny random GAIR bundle set as the plugin's model, a sample Sentinel-2 raster,
and its embedding raster (made once by the engine so analysis algorithms have input)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    import torch

    import engine

    torch.manual_seed(0)
    return engine.save_bundle(engine.GAIRModel(engine.GAIRConfig.tiny()), tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def gair_settings(qgis_app, tiny_bundle):
    """The plugin's settings point at the tiny bundle on the CPU (as a user would set them)."""
    from gair_qgis.engine_jobs import stop_engine
    from gair_qgis.settings import GAIRSettings

    old = GAIRSettings.load()
    GAIRSettings(str(tiny_bundle), "torch", "cpu").save()
    stop_engine()
    yield GAIRSettings.load()
    old.save()
    stop_engine()


@pytest.fixture(scope="session")
def sample_raster(examples, tmp_path_factory) -> Path:
    """Detroit's 12-band L2A crop (EPSG:4326), copied so tests never write beside the sample file."""
    row = next(r for r in examples if r["id"] == "detroit")
    target = tmp_path_factory.mktemp("samples") / "detroit_rs.tif"
    shutil.copy(row["rs_path"], target)
    return target


@pytest.fixture(scope="session")
def sample_embedding(sample_raster, tiny_bundle, tmp_path_factory) -> Path:
    import engine

    out = tmp_path_factory.mktemp("embedding") / "detroit_gair.tif"
    # float32: the learnable-label tests fit exact linear functions of the stored vectors with 20 points in 32 dims
    # (int8 rasters through the toolbox: test_qgis_process, the map tool tests)
    return Path(engine.embed_raster(sample_raster, out, str(tiny_bundle), dtype="float32"))


_PROVIDERS: list = []  # the registry does not own Python providers: keep them alive for the session


@pytest.fixture
def gair_provider(qgis_processing, gair_settings):
    """The `gair` provider registered in the Processing registry (as initProcessing does)."""
    from qgis.core import QgsApplication

    from gair_qgis.toolbox.provider import GAIRProvider

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("gair")
    if provider is None:
        provider = GAIRProvider()
        _PROVIDERS.append(provider)
        registry.addProvider(provider)
    return provider
