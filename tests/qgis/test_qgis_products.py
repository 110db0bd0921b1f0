"""Embed raster in Processing on Sentinel-2 products as users have them: a .SAFE folder, its .zip, a band folder,
each giving the engine's own result on that product, and one input asked for (not zero, not two)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.test_s2_products import ground, make_safe, zip_of


@pytest.fixture(scope="module")
def safe(tmp_path_factory) -> Path:
    return make_safe(tmp_path_factory.mktemp("product"), ground(seed=3))


def test_safe_folder_and_zip_embed_as_the_engine_does(gair_provider, tiny_bundle, safe, tmp_path):
    import processing

    import engine

    direct = engine.embed_raster(safe, tmp_path / "direct.tif", str(tiny_bundle), dims=0, dtype="float32")
    with rasterio.open(direct) as ds:
        expected = ds.read()
    for name, params in (("folder", {"FOLDER": str(safe)}), ("zip", {"PRODUCT": str(zip_of(safe))})):
        out = tmp_path / f"{name}.tif"
        result = processing.run("gair:embed_raster", {**params, "DIMS": 0, "DTYPE": 0, "OUTPUT": str(out)})
        with rasterio.open(result["OUTPUT"]) as ds:
            np.testing.assert_allclose(ds.read(), expected, rtol=1e-6, atol=1e-6)


def test_exactly_one_input_is_asked_for(gair_provider, safe, sample_raster, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    for params in ({}, {"INPUT": str(sample_raster), "FOLDER": str(safe)}):
        with pytest.raises(QgsProcessingException, match="Give one input"):
            processing.run("gair:embed_raster", {**params, "OUTPUT": str(tmp_path / "x.tif")})
    assert not (tmp_path / "x.tif").exists()
