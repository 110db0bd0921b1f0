"""Vector layers in and out with pyogrio's numpy API (no pandas): one reader and one atomic GeoPackage writer.

GeoPackages are written as version 1.2 (pyogrio's newer GDAL would write 1.4, which QGIS 3.22 only "partially
supports", warning on every open) and with at most 3-D WKB: inside QGIS, shapely runs on the older system GEOS,
which rejects shapely's 4-D default.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .embedding_raster import temp_path_for
from ..errors import GAIRError

META_TABLE = "gair_meta"
GPKG_OPTIONS = {"VERSION": "1.2"}


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
    """Read a GeoPackage/GeoJSON/shapefile layer (the first one that is not `gair_meta` by default)."""
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


def require_layer_crs(layer: VectorLayer) -> None:
    if layer.crs is None:
        raise GAIRError(f"{layer.path.name} has no CRS, so its features cannot be placed on the raster; "
                        "assign one (e.g. in QGIS: Layer > Set CRS) and save it again")


def _geometry_type(geometries: np.ndarray) -> str:
    import shapely

    types = {shapely.get_type_id(g) for g in geometries if g is not None}
    if types and types <= {3, 6}:
        return "MultiPolygon" if 6 in types else "Polygon"
    return "Point" if types == {0} else "Unknown"


def write_gpkg(path: str | os.PathLike, geometries: np.ndarray | None, fields: dict[str, np.ndarray], crs,
               layer: str | None = None, layer_metadata: dict | None = None, geometry_type: str | None = None,
               tables: dict[str, dict[str, np.ndarray]] | None = None) -> Path:
    """Write a GeoPackage atomically (temp name in the same folder, then os.replace).

    geometries None writes an attribute table; `tables` adds attribute-only tables (e.g. `gair_meta`).
    """
    import pyogrio.raw
    import shapely

    path = Path(path)
    if path.suffix.lower() != ".gpkg":
        raise GAIRError(f"output {path.name} must be a GeoPackage (.gpkg)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path, ".gpkg")
    crs_text = crs.to_wkt() if hasattr(crs, "to_wkt") else (str(crs) if crs else None)
    if geometries is not None:
        geometry_type = geometry_type or _geometry_type(geometries)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="'crs' was not provided")  # attribute tables have none
            logging.getLogger("pyogrio").setLevel(logging.WARNING)  # not "INFO Created N records" on every write
            wkb = None if geometries is None else shapely.to_wkb(geometries, output_dimension=3)
            pyogrio.raw.write(tmp, wkb, list(fields.values()), list(fields), driver="GPKG", layer=layer or path.stem,
                              geometry_type=geometry_type if geometries is not None else None, crs=crs_text,
                              layer_metadata=layer_metadata, promote_to_multi=geometry_type == "MultiPolygon",
                              dataset_options=GPKG_OPTIONS)
            for name, columns in (tables or {}).items():
                pyogrio.raw.write(tmp, None, list(columns.values()), list(columns), layer=name, driver="GPKG",
                                  geometry_type=None)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        for extra in ("-wal", "-shm", "-journal"):
            Path(str(tmp) + extra).unlink(missing_ok=True)
    return path
