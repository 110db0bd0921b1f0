"""engine.io.vectors: the one vector reader/writer leaves global logging alone; geometry kinds by shapely's names."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import shapely

from engine import GAIRError
from engine.io.vectors import (
    META_TABLE,
    geometry_type_name,
    is_point,
    is_pointlike,
    is_polygonal,
    read_layer,
    read_layer_metadata,
    reproject,
    write_gpkg,
)


def test_write_leaves_pyogrio_logging_as_it_was(tmp_path, caplog):
    """pyogrio logs "Created N records" at INFO on each write: hidden during our writes, but the process-wide
    logger level and filters are the caller's and stay as they were."""
    logger = logging.getLogger("pyogrio._io")
    parent = logging.getLogger("pyogrio")
    before = (logger.level, list(logger.filters), parent.level, list(parent.filters))
    logger.setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG, logger="pyogrio"):
            write_gpkg(tmp_path / "a.gpkg", shapely.points([1.0], [2.0]), {"v": np.array([1])}, "EPSG:4326")
        assert not [r for r in caplog.records if "Created" in r.getMessage()]
        assert logger.level == logging.DEBUG and logger.filters == before[1]
        assert (parent.level, parent.filters) == before[2:]
    finally:
        logger.setLevel(before[0])
    import pyogrio.raw

    with caplog.at_level(logging.INFO, logger="pyogrio"):  # outside our writes pyogrio logs as configured
        pyogrio.raw.write(tmp_path / "b.gpkg", shapely.to_wkb(shapely.points([1.0], [2.0])), [np.array([1])], ["v"],
                          driver="GPKG", geometry_type="Point", crs="EPSG:4326")
    assert [r for r in caplog.records if "Created 1 records" in r.getMessage()]


def test_round_trip_metadata_and_geometry_kinds(tmp_path):
    square = shapely.box(0, 0, 1, 1)
    geoms = np.array([square, shapely.MultiPolygon([square, shapely.box(2, 2, 3, 3)])], dtype=object)
    path = write_gpkg(tmp_path / "p.gpkg", geoms, {"name": np.array(["a", "b"], dtype=object)}, "EPSG:32633",
                      layer="polys", layer_metadata={"GAIR_X": "1"},
                      tables={META_TABLE: {"GAIR_Y": np.array(["2"], dtype=object)}})
    layer = read_layer(path)
    assert layer.name == "polys" and layer.geometry_type == "MultiPolygon" and layer.crs.to_epsg() == 32633
    assert list(layer.column("name")) == ["a", "b"] and all(is_polygonal(g) for g in layer.geometries)
    assert read_layer_metadata(path, "polys") == {"GAIR_Y": "2"}  # the gair_meta table first
    with pytest.raises(GAIRError, match="no field 'nope'"):
        layer.column("nope")
    point, multi = shapely.Point(1, 2), shapely.MultiPoint([(0, 0), (1, 1)])
    assert is_point(point) and not is_point(multi) and is_pointlike(multi) and not is_polygonal(point)
    assert [geometry_type_name(g) for g in ([point], [square], [square, geoms[1]], [point, square])] == [
        "Point", "Polygon", "MultiPolygon", "Unknown"]
    moved = reproject(np.array([point], dtype=object), "EPSG:4326", "EPSG:3857")
    assert shapely.get_x(moved[0]) == pytest.approx(111319.49, abs=0.01)
    assert not list(tmp_path.glob(".*"))  # no temp files left
