"""Frozen-encoder features of EuroSAT-format patch folders: one folder per class of 13-band 64 x 64 GeoTIFFs.

Band order of the files EuroSAT-MS ships: B01 B02 B03 B04 B05 B06 B07 B08 B09 B10 B11 B12 B8A, i.e. B8A is the
13th band, not the 9th as the EuroSAT paper's table lists (phelber/EuroSAT#7; torchgeo fixed its loader in
torchgeo#2480 after checking that the 9th band has B09's 60 m texture). The files carry no band descriptions, so
this documented layout maps the bands BY IDENTITY to the model's 10 bands; tifs whose descriptions name Sentinel-2
bands are mapped by those instead, and `band_order` overrides both. The engine's generic 13-band (L1C) rule assumes
B8A 9th, so it is deliberately not used here.

Features: "mean" = the crop embedding (mean of the tokens, `encode_rs`), the natural feature for a patch-level label.
Other modes (nili, bilinear, bicubic) = the point query at the patch centre: a localized view of the same tokens,
reported beside the mean to show how much of the patch label the centre embedding carries.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import GAIRError
from ..pipeline.bands import band_labels, resolve_bands, s2_band_id

EUROSAT_BAND_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")
PATCH_SUFFIXES = (".tif", ".tiff")
EQUAL_AREA_CRS = "EPSG:6933"  # WGS 84 / NSIDC EASE-Grid 2.0 Global: metres, for spatial blocks across UTM zones


def find_patches(root: str | os.PathLike) -> tuple[list[Path], np.ndarray, list[str]]:
    """Patch files, their class names and the sorted class list of a EuroSAT-format folder."""
    root = Path(root)
    if not root.is_dir():
        raise GAIRError(f"patch folder {root} does not exist; give a folder with one sub-folder of GeoTIFFs per class")
    classes, paths, labels = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in PATCH_SUFFIXES)
        if files:
            classes.append(folder.name)
            paths += files
            labels += [folder.name] * len(files)
    if len(classes) < 2:
        raise GAIRError(f"{root} has {len(classes)} class folder(s) with GeoTIFFs; the EuroSAT layout needs at least "
                        "two (ROOT/<class name>/<patch>.tif)")
    return paths, np.asarray(labels), classes


def parse_band_order(band_order: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """'B01,B02,...' or a list -> names; every entry must be a Sentinel-2 band or '-' (ignored)."""
    if band_order is None:
        return EUROSAT_BAND_ORDER
    names = [t.strip() for t in (band_order.split(",") if isinstance(band_order, str) else band_order) if t.strip()]
    unknown = [n for n in names if n != "-" and s2_band_id(n) is None]
    if unknown:
        raise GAIRError(f"band order {unknown} are not Sentinel-2 band names (B01..B12, B8A); use - for a band to skip")
    return tuple(names)


class PatchReader:
    """Reads one patch as raw DN in the model's band order, checking the band count against the layout."""

    def __init__(self, wanted: tuple[str, ...], band_order: tuple[str, ...], explicit: bool) -> None:
        self.wanted, self.band_order, self.explicit = wanted, band_order, explicit

    def indexes(self, ds, path: Path) -> list[int]:
        labels = band_labels(ds)
        if not self.explicit and any(s2_band_id(label) for label in labels):
            return resolve_bands(labels, self.wanted)
        if ds.count != len(self.band_order):
            raise GAIRError(f"{path.name} has {ds.count} bands but the band order names {len(self.band_order)} "
                            f"({','.join(self.band_order)}); EuroSAT-MS patches have 13. Give --band-order for "
                            "other layouts")
        return resolve_bands(labels, self.wanted, explicit=list(self.band_order))

    def read(self, path: Path) -> tuple[np.ndarray, tuple[float, float] | None, object]:
        """(10, H, W) float32 DN, the patch centre in its CRS (None without a georeference), and the CRS."""
        import rasterio

        try:
            with rasterio.open(path) as ds:
                index = self.indexes(ds, path)
                data = ds.read([i + 1 for i in index], out_dtype=np.float32)
                centre = ds.xy(ds.height / 2, ds.width / 2, offset="ul") if ds.crs is not None else None
                return data, centre, ds.crs
        except rasterio.errors.RasterioIOError as exc:
            raise GAIRError(f"cannot read patch {path}: {exc}") from exc


def ground_coordinates(centres: list, crss: list) -> np.ndarray | None:
    """Patch centres in metres: the shared projected CRS's own units, else EASE-Grid 2.0 (None if any lacks a CRS)."""
    from pyproj import CRS, Transformer

    if any(c is None for c in centres):
        return None
    xy = np.asarray(centres, np.float64)
    unique = {c.to_wkt() for c in crss}
    if len(unique) == 1:
        crs = CRS.from_wkt(unique.pop())
        if crs.is_projected:
            return xy * crs.axis_info[0].unit_conversion_factor
    out = np.empty_like(xy)
    for wkt in {c.to_wkt() for c in crss}:
        rows = np.array([c.to_wkt() == wkt for c in crss])
        transformer = Transformer.from_crs(CRS.from_wkt(wkt), EQUAL_AREA_CRS, always_xy=True)
        out[rows] = np.column_stack(transformer.transform(xy[rows, 0], xy[rows, 1]))
    return out


def patch_features(model, paths: list[Path], modes: tuple[str, ...] = ("mean", "nili"),
                   band_order=None, batch_size: int = 32,
                   progress: Callable[[float], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """{mode: (N, D) features} ("mean" = crop mean, others = query at the centre) and the patch centres in metres."""
    from ..runtime.preprocess import preprocess_rs
    from .protocol import check_cancel

    cfg = model.config
    reader = PatchReader(tuple(cfg.rs_bands), parse_band_order(band_order), band_order is not None)
    features: dict[str, list[np.ndarray]] = {m: [] for m in modes}
    centres, crss = [], []
    for start in range(0, len(paths), batch_size):
        check_cancel(cancel)
        inputs = []
        for path in paths[start:start + batch_size]:
            data, centre, crs = reader.read(path)
            inputs.append(preprocess_rs(data, cfg)[0])
            centres.append(centre)
            crss.append(crs)
        tokens = np.asarray(model.rs_tokens(np.stack(inputs)), np.float32)
        centre_rel = np.full((len(tokens), 1, 2), 0.5)
        for mode in modes:
            if mode == "mean":
                features[mode].append(tokens.mean(axis=1))
            else:
                features[mode].append(np.asarray(model.query_tokens(tokens, centre_rel, mode=mode), np.float32)[:, 0])
        if progress is not None:
            progress(min(1.0, (start + batch_size) / len(paths)))
    return {m: np.concatenate(v) for m, v in features.items()}, ground_coordinates(centres, crss)
