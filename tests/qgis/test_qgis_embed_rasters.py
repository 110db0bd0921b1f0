"""Embed many rasters in Processing: tiles as layers -> one embedding raster each in one space, a VRT mosaic, the
engine's own bytes, a re-run that skips finished tiles, and layers QGIS's GDAL can open."""
from __future__ import annotations

from pathlib import Path

import pytest
from rasterio.transform import from_origin

from tests.test_pipeline_raster import synthetic_s2, write_raster

TILE = 96


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> list[Path]:
    scene, folder = synthetic_s2(TILE, 2 * TILE, seed=4), tmp_path_factory.mktemp("tiles")
    return [write_raster(folder / f"T{k}.tif", scene[:, :, k * TILE:(k + 1) * TILE].copy(),
                         transform=from_origin(500000.0 + k * TILE * 10, 4500000.0, 10.0, 10.0)) for k in range(2)]


def test_tiles_embed_into_one_space_and_rerun_skips(gair_provider, tiny_bundle, tiles, tmp_path):
    import processing
    from qgis.core import QgsProcessingContext, QgsProject, QgsRasterLayer

    import engine
    from gair_qgis.toolbox.algorithms.embed_rasters import gdal_opens_int8_vrt

    direct = engine.embed_rasters(tiles, tmp_path / "direct", str(tiny_bundle), dims=4, dtype="float32")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    params = {"INPUTS": [str(p) for p in tiles], "DIMS": 4, "DTYPE": 0, "OUTPUT": str(tmp_path / "out")}
    result = processing.run("gair:embed_rasters", params, context=context)
    assert result["EMBEDDED"] == 2 and result["SKIPPED"] == 0
    assert Path(result["MOSAIC"]).name == "mosaic.vrt"
    for k in range(2):
        assert (tmp_path / "out" / f"T{k}.tif").read_bytes() == Path(direct.outputs[k]).read_bytes()
    assert QgsRasterLayer(result["MOSAIC"], "m").isValid()  # float32: any GDAL opens the mosaic
    assert list(context.layersToLoadOnCompletion()) == [result["MOSAIC"]]
    again = processing.run("gair:embed_rasters", params)
    assert again["EMBEDDED"] == 0 and again["SKIPPED"] == 2
    context = QgsProcessingContext()
    int8 = processing.run("gair:embed_rasters", {**params, "DTYPE": 2, "OUTPUT": str(tmp_path / "i8")},
                          context=context)
    loads = sorted(Path(p).name for p in context.layersToLoadOnCompletion())
    assert loads == (["mosaic.vrt"] if gdal_opens_int8_vrt() else ["T0.tif", "T1.tif"])
    assert all(QgsRasterLayer(str(tmp_path / "i8" / name), name).isValid() for name in loads)
    assert int8["EMBEDDED"] == 2


def test_no_input_is_refused(gair_provider, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="Give the rasters to embed"):
        processing.run("gair:embed_rasters", {"OUTPUT": str(tmp_path / "out")})
    assert not (tmp_path / "out").exists()
