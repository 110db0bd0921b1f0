"""Vector layers in and out with pyogrio's numpy API (no pandas): the engine's one reader and one GeoPackage writer.

Geometries are shapely arrays, CRSs pyproj. GeoPackages are written as version 1.2 (pyogrio's newer GDAL would write
1.4, which QGIS 3.22 only "partially supports", warning on every open) and with at most 3-D WKB: inside QGIS, shapely
runs on the older system GEOS, which rejects shapely's 4-D default.
"""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GAIRError
from .files import atomic_path

META_TABLE = "gair_meta"
GPKG_OPTIONS = {"VERSION": "1.2"}
_PYOGRIO_LOGGER = "pyogrio._io"  # logs "Created N records" at INFO on every write


@dataclass
class VectorLayer:
    """A layer in memory: shapely geometries (None where missing), attribute columns, CRS (pyproj) and fids."""

    path: Path
    name: str
    geometries: np.ndarray
    fields: dict[str, np.ndarray]
    crs: object | None
    geometry_type: str | None
    fids: np.ndarray

    def __len__(self) -> int:
        return len(self.geometries)

    def column(self, name: str) -> np.ndarray:
        if name not in self.fields:
            raise GAIRError(f"{self.path.name} has no field {name!r}; fields: {sorted(self.fields)}")
        return self.fields[name]


def read_layer(path: str | os.PathLike, layer: str | int | None = None, require_crs: bool = False) -> VectorLayer:
    """Read a GeoPackage/GeoJSON/shapefile/CSV layer (the first one that is not `gair_meta` by default)."""
    import pyogrio
    import pyogrio.raw
    import shapely
    from pyproj import CRS

    path = Path(path)
    if not path.exists():
        raise GAIRError(f"vector layer {path} does not exist")
    try:
        if layer is None:
            names = [str(n) for n, _ in pyogrio.list_layers(path) if n != META_TABLE]
            layer = names[0] if names else None
        meta, fids, wkb, columns = pyogrio.raw.read(path, layer=layer, return_fids=True)
    except Exception as exc:  # pyogrio's DataSourceError/DataLayerError and GDAL errors
        raise GAIRError(f"cannot read vector layer {path} (layer {layer!r}): {exc}") from exc
    geometries = shapely.from_wkb(wkb) if wkb is not None else np.full(len(fids), None)
    data = VectorLayer(path, str(meta.get("layer_name") or (layer if isinstance(layer, str) else path.stem)),
                       np.asarray(geometries, object), {str(n): np.asarray(c) for n, c in zip(meta["fields"], columns)},
                       CRS.from_user_input(meta["crs"]) if meta.get("crs") else None, meta.get("geometry_type"),
                       np.asarray(fids))
    if require_crs:
        require_layer_crs(data)
    return data


def read_layer_metadata(path: str | os.PathLike, layer_name: str) -> dict[str, str]:
    """Key/values the engine stored with a layer: the `gair_meta` table, else the layer metadata; {} when neither
    (GeoJSON, shapefiles), upper-case keys."""
    import pyogrio
    import pyogrio.raw

    try:
        if META_TABLE in {n for n, _ in pyogrio.list_layers(path)}:
            meta, _, _, cols = pyogrio.raw.read(path, layer=META_TABLE, read_geometry=False)
            values = {str(n).upper(): str(c[0]) for n, c in zip(meta["fields"], cols) if len(c)}
            if values:
                return values
        info = pyogrio.read_info(path, layer=layer_name)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, pyogrio.errors.FieldError):
        return {}
    return {str(k).upper(): str(v) for k, v in (info.get("layer_metadata") or {}).items()}


def require_layer_crs(layer: VectorLayer) -> None:
    if layer.crs is None:
        raise GAIRError(f"{layer.path.name} has no CRS, so its features cannot be placed on the raster; "
                        "assign one (e.g. in QGIS: Layer > Set CRS) and save it again")


# ---- geometry kinds and CRSs ---------------------------------------------------------------------------------------
def _type_ids(*kinds) -> tuple[int, ...]:
    return tuple(int(k) for k in kinds)


def is_point(geometry) -> bool:
    import shapely

    return shapely.get_type_id(geometry) == shapely.GeometryType.POINT


def is_pointlike(geometry) -> bool:
    """Point or MultiPoint."""
    import shapely

    return shapely.get_type_id(geometry) in _type_ids(shapely.GeometryType.POINT, shapely.GeometryType.MULTIPOINT)


def is_polygonal(geometry) -> bool:
    """Polygon or MultiPolygon."""
    import shapely

    return shapely.get_type_id(geometry) in _type_ids(shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON)


def geometry_type_name(geometries: np.ndarray) -> str:
    """The OGR layer type for a set of geometries: Point, Polygon, MultiPolygon, else Unknown."""
    import shapely

    types = {int(shapely.get_type_id(g)) for g in geometries if g is not None}
    polygonal = set(_type_ids(shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON))
    if types and types <= polygonal:
        return "MultiPolygon" if int(shapely.GeometryType.MULTIPOLYGON) in types else "Polygon"
    return "Point" if types == {int(shapely.GeometryType.POINT)} else "Unknown"


def to_pyproj(crs):
    """A pyproj CRS from a pyproj/rasterio CRS, WKT, or 'EPSG:n'."""
    from pyproj import CRS

    return CRS.from_wkt(crs.to_wkt()) if hasattr(crs, "to_wkt") else CRS.from_user_input(crs)


def crs_name(crs) -> str:
    """'EPSG:n', else the CRS's name; 'none' for no CRS (for messages)."""
    if crs is None:
        return "none"
    c = to_pyproj(crs)
    return c.name if c.to_epsg() is None else f"EPSG:{c.to_epsg()}"


def reproject(geometries: np.ndarray, src_crs, dst_crs) -> np.ndarray:
    """Geometries from src_crs to dst_crs (x/y in each CRS's easting/northing or lon/lat order)."""
    import shapely
    from pyproj import Transformer

    src, dst = to_pyproj(src_crs), to_pyproj(dst_crs)
    if src == dst:
        return geometries
    transformer = Transformer.from_crs(src, dst, always_xy=True)
    return shapely.transform(geometries, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


# ---- writing -------------------------------------------------------------------------------------------------------
class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


@contextmanager
def _quiet_pyogrio_info() -> Iterator[None]:
    """Drop pyogrio's per-write INFO line for the duration of a write; the logger's level and filters are restored
    (library code leaves process-wide logging settings alone)."""
    logger, quiet = logging.getLogger(_PYOGRIO_LOGGER), _BelowWarning()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def write_gpkg(path: str | os.PathLike, geometries: np.ndarray | None, fields: dict[str, np.ndarray], crs,
               layer: str | None = None, layer_metadata: dict | None = None, geometry_type: str | None = None,
               tables: dict[str, dict[str, np.ndarray]] | None = None) -> Path:
    """Write a GeoPackage atomically. geometries None writes an attribute table; `tables` adds attribute-only
    tables (e.g. `gair_meta`)."""
    import pyogrio.raw
    import shapely

    path = Path(path)
    if path.suffix.lower() != ".gpkg":
        raise GAIRError(f"output {path.name} must be a GeoPackage (.gpkg)")
    crs_text = crs.to_wkt() if hasattr(crs, "to_wkt") else (str(crs) if crs else None)
    if geometries is not None:
        geometry_type = geometry_type or geometry_type_name(geometries)
    with atomic_path(path) as tmp, warnings.catch_warnings(), _quiet_pyogrio_info():
        warnings.filterwarnings("ignore", message="'crs' was not provided")  # attribute tables have none
        wkb = None if geometries is None else shapely.to_wkb(geometries, output_dimension=3)
        pyogrio.raw.write(tmp, wkb, list(fields.values()), list(fields), driver="GPKG", layer=layer or path.stem,
                          geometry_type=geometry_type if geometries is not None else None, crs=crs_text,
                          layer_metadata=layer_metadata, promote_to_multi=geometry_type == "MultiPolygon",
                          dataset_options=GPKG_OPTIONS)
        for name, columns in (tables or {}).items():
            pyogrio.raw.write(tmp, None, list(columns.values()), list(columns), layer=name, driver="GPKG",
                              geometry_type=None)
    return path
