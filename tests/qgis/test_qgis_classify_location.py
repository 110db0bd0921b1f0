"""Classify from location through processing.run: points in UTM (memory layer), an extent in another CRS, the class
raster styled with the class names, the confidence raster, the cross-validated accuracy; bad input is explained."""
from __future__ import annotations

import numpy as np
import processing
import pytest
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsPalettedRasterRenderer,
    QgsPointXY,
    QgsProcessingException,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

UTM32N = QgsCoordinateReferenceSystem("EPSG:32632")


def points(count: int = 80, classes: int = 2) -> QgsVectorLayer:
    """Points over 10-11 E, 47-48 N stored in UTM 32N; the class is the side of lon 10.5 (or one class only)."""
    layer = QgsVectorLayer(f"Point?crs={UTM32N.authid()}&field=cover:string", "points", "memory")
    to_utm = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"), UTM32N, QgsProject.instance())
    rng = np.random.default_rng(0)
    features = []
    for lon, lat in zip(rng.uniform(10, 11, count), rng.uniform(47, 48, count)):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromPointXY(to_utm.transform(QgsPointXY(lon, lat))))
        feature.setAttributes(["forest" if lon < 10.5 or classes == 1 else "water"])
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    return layer


def test_classify_from_location(gair_provider, tmp_path):
    import rasterio

    result = processing.run("gair:classify_location", {
        "INPUT": points(), "FIELD": "cover", "EXTENT": "10,11,47,48 [EPSG:4326]", "PIXEL_SIZE": 0.05,
        "OUTPUT": str(tmp_path / "prior.tif"), "CONFIDENCE": str(tmp_path / "conf.tif")})
    layer = QgsRasterLayer(result["OUTPUT"], "prior", "gdal")
    assert layer.isValid() and layer.crs().authid() == "EPSG:4326"
    assert (layer.width(), layer.height()) == (20, 20)
    assert isinstance(layer.renderer(), QgsPalettedRasterRenderer)
    assert [c.label for c in layer.renderer().classes()] == ["forest", "water"]
    with rasterio.open(result["OUTPUT"]) as ds:
        classes = ds.read(1)
    assert (classes[:, :8] == 1).mean() > 0.8 and (classes[:, 12:] == 2).mean() > 0.8
    with rasterio.open(result["CONFIDENCE"]) as ds:
        confidence = ds.read(1)
    assert np.nanmin(confidence) >= 0.5 - 1e-6 and np.nanmax(confidence) <= 1.0 + 1e-6
    assert result["ACCURACY"] > 0.8


def test_one_class_is_refused_before_running(gair_provider, tmp_path):
    with pytest.raises(QgsProcessingException, match="needs at least two"):
        processing.run("gair:classify_location", {"INPUT": points(classes=1), "FIELD": "cover",
                                                  "OUTPUT": str(tmp_path / "x.tif")})
    assert not list(tmp_path.glob("x.tif*"))
