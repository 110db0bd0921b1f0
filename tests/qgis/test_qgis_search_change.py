"""Search by photo, search by location and change through processing.run (jobs in the engine worker): the same
numbers as the engine called directly, styled outputs, and the algorithms' own messages for missing inputs."""
from __future__ import annotations

import numpy as np
import processing
import pytest
import rasterio
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingException,
    QgsProject,
    QgsRasterLayer,
    QgsSingleBandPseudoColorRenderer,
    QgsVectorLayer,
)

UTM17N = QgsCoordinateReferenceSystem("EPSG:32617")


def read(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


@pytest.fixture(scope="module")
def detroit(examples):
    return next(r for r in examples if r["id"] == "detroit")


def test_search_by_photo_and_location_match_the_engine(gair_provider, sample_embedding, tiny_bundle, detroit,
                                                       tmp_path):
    import engine
    from engine.analysis.modal_search import search_by_location, search_by_photo

    model = engine.load_model(tiny_bundle, device="cpu")  # the model in the plugin's settings
    photo = processing.run("gair:search_by_photo", {"INPUT": str(sample_embedding), "PHOTO": str(detroit["sv_path"]),
                                                    "TOP_K": 3, "OUTPUT": str(tmp_path / "photo.tif"),
                                                    "TOP_K_OUTPUT": str(tmp_path / "photo_top.gpkg")})
    direct = search_by_photo(sample_embedding, tmp_path / "direct_photo.tif", model, photos=[detroit["sv_path"]],
                             top_k=0)
    np.testing.assert_allclose(read(photo["OUTPUT"]), read(direct.path), atol=1e-6)
    assert QgsVectorLayer(photo["TOP_K_OUTPUT"], "top", "ogr").featureCount() == 3
    layer = QgsRasterLayer(photo["OUTPUT"], "photo", "gdal")
    assert isinstance(layer.renderer(), QgsSingleBandPseudoColorRenderer)

    lonlat = (detroit["lon"], detroit["lat"])
    located = processing.run("gair:search_by_location", {
        "INPUT": str(sample_embedding), "LOCATION": f"{lonlat[0]},{lonlat[1]} [EPSG:4326]", "TOP_K": 0,
        "OUTPUT": str(tmp_path / "loc.tif")})
    expected = read(search_by_location(sample_embedding, tmp_path / "direct_loc.tif", model, locations=[lonlat],
                                       top_k=0).path)
    np.testing.assert_allclose(read(located["OUTPUT"]), expected, atol=1e-6)
    # the same place as a memory layer in UTM (not the raster's CRS)
    points = QgsVectorLayer(f"Point?crs={UTM17N.authid()}", "places", "memory")
    feature = QgsFeature(points.fields())
    to_utm = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"), UTM17N, QgsProject.instance())
    feature.setGeometry(QgsGeometry.fromPointXY(to_utm.transform(QgsPointXY(*lonlat))))
    points.dataProvider().addFeatures([feature])
    from_layer = processing.run("gair:search_by_location", {"INPUT": str(sample_embedding), "LOCATION_LAYER": points,
                                                            "TOP_K": 0, "OUTPUT": str(tmp_path / "layer.tif")})
    np.testing.assert_allclose(read(from_layer["OUTPUT"]), expected, atol=1e-5)


def test_change_finds_replaced_ground(gair_provider, sample_raster, sample_embedding, tiny_bundle, examples,
                                      tmp_path):
    import engine

    tokyo = next(r for r in examples if r["id"] == "tokyo")
    with rasterio.open(sample_raster) as ds:
        profile, data, descriptions = ds.profile, ds.read(), ds.descriptions
    with rasterio.open(tokyo["rs_path"]) as ds:
        data[:, 40:120, 100:200] = ds.read()[:, 40:120, 100:200]
    with rasterio.open(tmp_path / "later.tif", "w", **profile) as ds:
        ds.write(data)
        ds.descriptions = descriptions
    later = engine.embed_raster(tmp_path / "later.tif", tmp_path / "later_gair.tif", str(tiny_bundle),
                                dtype="float32", quicklook=False)
    result = processing.run("gair:change", {"BEFORE": str(sample_embedding), "AFTER": str(later),
                                            "OUTPUT": str(tmp_path / "d.tif"), "MASK": str(tmp_path / "m.tif"),
                                            "POLYGONS": str(tmp_path / "areas.gpkg")})
    changed = read(result["MASK"]) == 1
    truth = np.zeros_like(changed)
    truth[40:120, 100:200] = True
    assert (changed & truth).sum() / (changed | truth).sum() >= 0.7
    assert result["CHANGED_PIXELS"] == changed.sum() and 0 < result["THRESHOLD"] < 2
    assert QgsVectorLayer(result["POLYGONS"], "areas", "ogr").featureCount() >= 1
    assert isinstance(QgsRasterLayer(result["OUTPUT"], "d", "gdal").renderer(), QgsSingleBandPseudoColorRenderer)


@pytest.mark.parametrize(("algorithm", "parameters", "message"), [
    ("search_by_photo", {}, "Give a street-view photo"),
    ("search_by_location", {}, "Give a location"),
    ("search_by_location", {"LOCATION": "0,0 [EPSG:4326]", "MASK": "{tmp}/m.tif"}, "needs a threshold"),
    ("change", {"AFTER": "{raster}"}, "not a GAIR embedding raster"),
])
def test_missing_inputs_give_the_algorithms_message(gair_provider, sample_raster, sample_embedding, tmp_path,
                                                     algorithm, parameters, message):
    values = {"INPUT": str(sample_embedding), "BEFORE": str(sample_embedding), "OUTPUT": str(tmp_path / "o.tif")}
    if algorithm == "change":
        values.pop("INPUT")
    else:
        values.pop("BEFORE")
    values.update({k: v.format(raster=sample_raster, tmp=tmp_path) for k, v in parameters.items()})
    with pytest.raises(QgsProcessingException, match=message):
        processing.run(f"gair:{algorithm}", values)
