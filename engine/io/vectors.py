"""Vector layers in and out with pyogrio's numpy API (no pandas): the engine's one reader and one GeoPackage writer.

Geometries are shapely arrays, CRSs pyproj. A layer written into an existing GeoPackage replaces that layer only: the
other layers, their styles (`layer_styles`) and their `gair_meta` rows stay. GeoPackages are written as version 1.2
(pyogrio's newer GDAL would write 1.4, which QGIS 3.22 only "partially supports", warning on every open) and with at
most 3-D WKB: inside QGIS, shapely runs on the older system GEOS, which rejects shapely's 4-D default.
"""
from __future__ import annotations

import csv
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

_JOURNALS = ("-wal", "-shm", "-journal")  # SQLite's files beside a GeoPackage; stale ones must not outlive it

META_TABLE = "gair_meta"
LAYER_COLUMN = "gair_layer"  # the layer a `gair_meta` row describes (one row per layer)
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
    """Key/values the engine stored with a layer: its `gair_meta` row, else the layer metadata; {} when neither
    (GeoJSON, shapefiles), upper-case keys. A `gair_meta` table without a `gair_layer` column (older files) has one
    row, for the file's one layer."""
    import pyogrio
    import pyogrio.raw

    try:
        if META_TABLE in {n for n, _ in pyogrio.list_layers(path)}:
            meta, _, _, cols = pyogrio.raw.read(path, layer=META_TABLE, read_geometry=False)
            names = [str(n) for n in meta["fields"]]
            rows = list(range(len(cols[0]))) if cols else []
            if LAYER_COLUMN in names:
                owner = cols[names.index(LAYER_COLUMN)]
                rows = [i for i in rows if owner[i] is not None and str(owner[i]) == layer_name]
            values = {n.upper(): str(c[rows[0]]) for n, c in zip(names, cols)
                      if rows and n != LAYER_COLUMN and c[rows[0]] is not None}
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
    """Write one layer into a GeoPackage atomically; in an existing GeoPackage only that layer is replaced.

    The existing file is copied (SQLite's backup, so changes still in its write-ahead log come along) to the temp
    file, the layer is replaced in the copy, and the copy moves into place: other layers, their styles and their
    `tables` rows stay, and a failed write leaves the old file as it was. geometries None writes an attribute
    table. `tables` are attribute tables with one row per layer (e.g. `gair_meta`): this layer's row is replaced,
    those of other layers are kept."""
    import pyogrio.raw
    import shapely

    path = Path(path)
    if path.suffix.lower() != ".gpkg":
        raise GAIRError(f"output {path.name} must be a GeoPackage (.gpkg)")
    layer = layer or path.stem
    crs_text = crs.to_wkt() if hasattr(crs, "to_wkt") else (str(crs) if crs else None)
    if geometries is not None:
        geometry_type = geometry_type or geometry_type_name(geometries)
    with atomic_path(path, sidecars=_JOURNALS) as tmp, warnings.catch_warnings(), _quiet_pyogrio_info():
        existing = path.is_file()
        if existing:
            _copy_geopackage(path, tmp)
        warnings.filterwarnings("ignore", message="'crs' was not provided")  # attribute tables have none
        wkb = None if geometries is None else shapely.to_wkb(geometries, output_dimension=3)
        pyogrio.raw.write(tmp, wkb, list(fields.values()), list(fields), driver="GPKG", layer=layer,
                          geometry_type=geometry_type if geometries is not None else None, crs=crs_text,
                          layer_metadata=layer_metadata, promote_to_multi=geometry_type == "MultiPolygon",
                          dataset_options=None if existing else GPKG_OPTIONS)
        tables = {**({META_TABLE: {}} if existing else {}), **(tables or {})}  # no stale row for a replaced layer
        for name, columns in tables.items():
            columns = _rows_of_other_layers(tmp, name, layer, columns)
            if columns is None:
                continue
            pyogrio.raw.write(tmp, None, list(columns.values()), list(columns), layer=name, driver="GPKG",
                              geometry_type=None)
    return path


def _copy_geopackage(source: Path, target: Path) -> None:
    """A consistent copy of an existing GeoPackage (its write-ahead log included), or a clear refusal."""
    import sqlite3
    from urllib.parse import quote

    try:
        src = sqlite3.connect(f"file:{quote(str(source.resolve()))}?mode=ro", uri=True)
        try:
            if src.execute("SELECT count(*) FROM sqlite_master WHERE name = 'gpkg_contents'").fetchone()[0] != 1:
                raise sqlite3.DatabaseError("no gpkg_contents table")
            dst = sqlite3.connect(target)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.DatabaseError as exc:
        raise GAIRError(f"{source} exists but is not a GeoPackage a layer can be added to ({exc}); choose another "
                        "output name, or move that file away") from None


def _rows_of_other_layers(gpkg: Path, table: str, layer: str, columns: dict[str, np.ndarray]) -> dict | None:
    """`columns` (this layer's rows) tagged with `gair_layer`, after the rows the table holds for other layers;
    None when there is nothing to write (no such table and no rows)."""
    import pyogrio
    import pyogrio.raw

    new_rows = len(next(iter(columns.values()))) if columns else 0
    kept: dict[str, np.ndarray] = {}
    if table in {str(n) for n, _ in pyogrio.list_layers(gpkg)}:
        meta, _, _, cols = pyogrio.raw.read(gpkg, layer=table, read_geometry=False)
        names = [str(n) for n in meta["fields"]]
        owner = cols[names.index(LAYER_COLUMN)] if LAYER_COLUMN in names else np.full(len(cols[0]) if cols else 0, "")
        keep = np.array([o is None or str(o) != layer for o in owner], bool)
        kept = {n: np.asarray(c, object)[keep] for n, c in zip(names, cols)}
        kept[LAYER_COLUMN] = np.array([o if o is not None else "" for o in owner], object)[keep]
    elif not new_rows:
        return None
    count = len(kept.get(LAYER_COLUMN, ()))
    merged = {LAYER_COLUMN: np.concatenate([kept.get(LAYER_COLUMN, np.empty(0, object)),
                                            np.full(new_rows, layer, object)])}
    for name in [*(n for n in kept if n != LAYER_COLUMN), *(n for n in columns if n not in kept)]:
        old = kept.get(name, np.full(count, None, object))
        new = np.asarray(columns[name], object) if name in columns else np.full(new_rows, None, object)
        merged[name] = np.concatenate([np.asarray(old, object), new])
    return merged


def read_point_table(path: str | os.PathLike, lon_field: str = "lon", lat_field: str = "lat",
                     path_field: str = "path", date_field: str = "date", label_field: str = "label",
                     require_label: bool = False) -> list[dict]:
    """Rows of a point table as dicts with lon, lat (EPSG:4326), path (made absolute against the table's folder),
    date and label: a CSV with lon/lat columns, or any OGR vector (GeoPackage, ...) with point geometry
    (reprojected) or lon/lat fields. path_field "" reads tables without photos (labelled points)."""
    path = Path(path)
    if not path.is_file():
        raise GAIRError(f"point table {path} not found")
    if path.suffix.lower() in (".csv", ".txt"):
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        columns = set(rows[0]) if rows else set()
        lon, lat = None, None
    else:
        rows, columns, lon, lat = _read_vector_points(path)
    for name in (lon_field, lat_field):
        if lon is None and name not in columns:
            raise GAIRError(f"{path} has no column {name!r}; name the coordinate columns with --lon-field/--lat-field")
    if require_label and label_field not in columns:
        raise GAIRError(f"{path} has no column {label_field!r}; its columns are {sorted(columns)}")
    if path_field and path_field not in columns:
        raise GAIRError(f"{path} has no column {path_field!r}; name the photo path column with --path-field")
    base = path.resolve().parent
    out = []
    for i, row in enumerate(rows):
        try:
            x = float(row[lon_field]) if lon is None else lon[i]
            y = float(row[lat_field]) if lat is None else lat[i]
        except (TypeError, ValueError):
            raise GAIRError(f"{path} row {i + 1}: lon/lat are not numbers") from None
        photo = str(row.get(path_field) or "") if path_field else ""
        out.append({"lon": x, "lat": y, "path": str(base / photo) if photo and not Path(photo).is_absolute() else photo,
                    "date": str(row.get(date_field) or ""), "label": str(row.get(label_field) or "")})
    return out


def _read_vector_points(path: Path):
    """Rows, column names and the points' lon/lat (None for a layer without geometry) of any OGR vector layer."""
    import shapely

    layer = read_layer(path)
    columns = list(layer.fields)
    rows = [{c: layer.fields[c][i] for c in columns} for i in range(len(layer))]
    if not len(layer) or all(g is None for g in layer.geometries):
        return rows, set(columns), None, None
    points = layer.geometries if layer.crs is None else reproject(layer.geometries, layer.crs, "EPSG:4326")
    x, y = shapely.get_x(points), shapely.get_y(points)
    return rows, set(columns), list(np.asarray(x, float)), list(np.asarray(y, float))
