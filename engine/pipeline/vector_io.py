"""Vector layers in and out with pyogrio's numpy API: features with their attributes, and GeoPackage outputs
holding the input attributes plus `gair_000..` embedding fields and a one-row `gair_meta` table.

GeoPackages are written as version 1.2: pyogrio's newer GDAL would write 1.4, which QGIS 3.22's GDAL only
"partially supports" (a warning on every open).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..embedding_raster import BAND_PREFIX, band_names, temp_path_for
from ..errors import GAIRError

META_TABLE = "gair_meta"
STATUS_FIELD = "gair_status"
_OWN_FIELD = re.compile(rf"^{BAND_PREFIX}(\d{{3,}}|status)$", re.IGNORECASE)
GPKG_OPTIONS = {"VERSION": "1.2"}


@dataclass
class FeatureLayer:
    """A layer in memory: shapely geometries (None for none), attribute columns, CRS (pyproj) and geometry type."""

    path: Path
    name: str
    geometries: np.ndarray
    fields: dict[str, np.ndarray]
    crs: object | None
    geometry_type: str | None

    def __len__(self) -> int:
        return len(self.geometries)


def read_features(path: str | os.PathLike, layer: str | int | None = None) -> FeatureLayer:
    """Read a vector layer (GeoPackage, GeoJSON, shapefile, ...); the first non-`gair_meta` layer by default."""
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
        meta, _, wkb, columns = pyogrio.raw.read(path, layer=layer)
    except GAIRError:
        raise
    except Exception as exc:  # pyogrio's DataSourceError/DataLayerError and GDAL errors
        raise GAIRError(f"cannot read vector layer {path} (layer {layer!r}): {exc}") from exc
    geometries = shapely.from_wkb(wkb) if wkb is not None else np.full(len(columns[0]) if columns else 0, None)
    return FeatureLayer(path, str(layer if isinstance(layer, str) else path.stem), np.asarray(geometries, object),
                        {str(n): np.asarray(c) for n, c in zip(meta["fields"], columns)},
                        CRS.from_user_input(meta["crs"]) if meta.get("crs") else None, meta.get("geometry_type"))


def embedding_columns(vectors: np.ndarray) -> dict[str, np.ndarray]:
    """(N, K) float vectors (NaN rows for failures) -> {gair_000: float64 column, ...}; NaN is written as null."""
    vectors = np.asarray(vectors, dtype=np.float64)
    return {name: np.ascontiguousarray(vectors[:, k]) for k, name in enumerate(band_names(vectors.shape[1]))}


def write_features(path: str | os.PathLike, layer: FeatureLayer, vectors: np.ndarray, status: np.ndarray,
                   meta: dict[str, str], layer_name: str | None = None) -> Path:
    """GeoPackage = the layer's geometries and attributes (older gair fields replaced) + gair_### + gair_status.

    Written under a temp name in the destination folder and renamed at the end; `meta` goes into the layer
    metadata and the `gair_meta` table.
    """
    import pyogrio.raw
    import shapely

    path = Path(path)
    if path.suffix.lower() != ".gpkg":
        raise GAIRError(f"output {path.name} must be a GeoPackage (.gpkg)")
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {n: c for n, c in layer.fields.items() if not _OWN_FIELD.match(n)}
    columns.update(embedding_columns(vectors))
    columns[STATUS_FIELD] = np.asarray(status, dtype=object)
    spatial = layer.geometry_type is not None or any(g is not None for g in layer.geometries)
    # 3, not the 4-D default: inside QGIS, shapely runs on the older system GEOS, which rejects 4-D WKB
    wkb = shapely.to_wkb(layer.geometries, output_dimension=3) if spatial else None
    geometry_type = (layer.geometry_type or "Unknown") if spatial else None
    tmp = temp_path_for(path, ".gpkg")
    try:
        pyogrio.raw.write(tmp, wkb, list(columns.values()), list(columns), layer=layer_name or layer.name,
                          driver="GPKG", geometry_type=geometry_type, crs=layer.crs.to_wkt() if layer.crs else None,
                          layer_metadata=meta, dataset_options=GPKG_OPTIONS)
        pyogrio.raw.write(tmp, None, [np.array([str(v)], dtype=object) for v in meta.values()], list(meta),
                          layer=META_TABLE, driver="GPKG", geometry_type=None)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        for extra in ("-wal", "-shm", "-journal"):
            Path(str(tmp) + extra).unlink(missing_ok=True)
    return path
