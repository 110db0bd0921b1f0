"""The pretraining manifest: one row per (Sentinel-2 crop, photo) sample, as CSV or Parquet.

Columns (paths relative to the manifest's folder, or absolute):
  rs_path                    raster or crop file
  col_off,row_off,width,height  the crop window in rs_path (empty: the whole file is the crop)
  sv_path                    the photo (empty for label-only rows, e.g. probe points)
  lon,lat                    where the photo was taken, degrees
  query_x,query_y            the point inside the crop, x from west and y from north, 0..1 (exact, in the raster CRS)
  bbox_lon_min,bbox_lat_max,bbox_lon_max,bbox_lat_min  crop bounds in EPSG:4326 (query_x/y derive from them if empty)
  date,label                 optional
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import GAIRError
from ..io.files import atomic_path

COLUMNS = ("rs_path", "col_off", "row_off", "width", "height", "sv_path", "lon", "lat", "query_x", "query_y",
           "bbox_lon_min", "bbox_lat_max", "bbox_lon_max", "bbox_lat_min", "date", "label")
REQUIRED = ("rs_path", "lon", "lat")


@dataclass(frozen=True)
class Sample:
    rs_path: str
    window: tuple[int, int, int, int] | None  # col_off, row_off, width, height
    sv_path: str
    lon: float
    lat: float
    query_x: float
    query_y: float
    bbox: tuple[float, float, float, float]  # lon_min, lat_max, lon_max, lat_min
    date: str = ""
    label: str = ""


def write_manifest(rows: list[dict], path: str | Path) -> Path:
    """Atomic write; `.parquet` needs pyarrow, anything else is CSV."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".parquet":
            pq = _pyarrow_parquet()
            import pyarrow as pa

            pq.write_table(pa.table({c: [str(r.get(c, "")) for r in rows] for c in COLUMNS}), tmp)
        else:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
    return path


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise GAIRError("Parquet manifests need pyarrow (pip install pyarrow), or use a .csv manifest") from exc
    return pq


def _read_table(path: Path) -> list[dict]:
    if path.suffix.lower() == ".parquet":
        table = _pyarrow_parquet().read_table(path).to_pydict()
        names = list(table)
        if not names:
            return []
        return [{n: ("" if table[n][i] is None else str(table[n][i])) for n in names}
                for i in range(len(table[names[0]]))]
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _float(row: dict, key: str, line: int, path: Path) -> float:
    text = (row.get(key) or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise GAIRError(f"{path} row {line}: column {key} = {text!r} is not a number") from None
    if not math.isfinite(value):
        raise GAIRError(f"{path} row {line}: column {key} is not finite")
    return value


def _resolve(base: Path, text: str) -> str:
    return "" if not text else str(Path(text) if Path(text).is_absolute() else base / text)


def read_manifest(path: str | Path, require_photos: bool = True) -> list[Sample]:
    """Rows as Samples with absolute paths; a bad row raises naming the row and column."""
    path = Path(path)
    if not path.is_file():
        raise GAIRError(f"manifest {path} not found; make one with `python -m engine build-dataset`")
    rows = _read_table(path)
    if not rows:
        raise GAIRError(f"manifest {path} has no rows")
    missing = [c for c in REQUIRED + (("sv_path",) if require_photos else ()) if c not in rows[0]]
    if missing:
        raise GAIRError(f"manifest {path} lacks columns {missing}; expected {', '.join(COLUMNS)}")
    base = path.resolve().parent
    samples = []
    for line, row in enumerate(rows, start=2):
        if require_photos and not (row.get("sv_path") or "").strip():
            raise GAIRError(f"{path} row {line}: sv_path is empty; pretraining needs a photo for every sample")
        window = None
        if (row.get("width") or "").strip():
            window = tuple(int(_float(row, k, line, path)) for k in ("col_off", "row_off", "width", "height"))
        lon, lat = _float(row, "lon", line, path), _float(row, "lat", line, path)
        bbox = (math.nan,) * 4
        if (row.get("bbox_lon_min") or "").strip():
            bbox = tuple(_float(row, k, line, path)
                         for k in ("bbox_lon_min", "bbox_lat_max", "bbox_lon_max", "bbox_lat_min"))
        if (row.get("query_x") or "").strip():
            qx, qy = _float(row, "query_x", line, path), _float(row, "query_y", line, path)
        elif not math.isnan(bbox[0]):
            qx = (lon - bbox[0]) / (bbox[2] - bbox[0])
            qy = (bbox[1] - lat) / (bbox[1] - bbox[3])
        else:
            raise GAIRError(f"{path} row {line}: give query_x/query_y or the bbox_* columns to place the photo in "
                            "its crop")
        if not (0.0 <= qx <= 1.0 and 0.0 <= qy <= 1.0):
            raise GAIRError(f"{path} row {line}: the photo point lies outside its crop (query {qx:.3f}, {qy:.3f})")
        samples.append(Sample(_resolve(base, row["rs_path"].strip()), window,
                              _resolve(base, (row.get("sv_path") or "").strip()), lon, lat, qx, qy, bbox,
                              (row.get("date") or "").strip(), (row.get("label") or "").strip()))
    return samples

