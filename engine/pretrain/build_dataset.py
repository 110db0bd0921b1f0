"""Make a pretraining manifest from Sentinel-2 rasters (any CRS) and a table of geotagged photos.

For each photo, a crop of the configured ground size that contains the photo point at a random offset (so the
localized query is learned at every position of the crop, not only the centre). Crops that would leave the raster
or touch nodata are retried at other offsets, then skipped and counted. Rasters are read as inference reads them
(pipeline.source.SourceRaster): bands by identity, crop size by the same rule (equatorial degree on EPSG:4326).

    python -m engine build-dataset --rasters s2/*.tif --photos photos.csv --out manifest.csv \
        [--config configs/tiny.toml | --crop-ground-m 2240] [--crops-dir crops/] [--seed 0]
    (`python -m engine.pretrain.build_dataset ...` is an alias)
"""
from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import GAIRConfig
from ..errors import Cancelled, GAIRError
from ..io.files import atomic_path
from ..pipeline.source import SourceRaster
from .manifest import write_manifest

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2")


@dataclass
class BuildReport:
    manifest: Path
    written: int = 0
    skipped: Counter = field(default_factory=Counter)  # no_raster, out_of_bounds, nodata, missing_photo

    def summary(self) -> str:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        return f"{self.written} samples written to {self.manifest}; skipped: {skipped}"


class _CropPlanner:
    """Crops of one raster, read through the inference pipeline's SourceRaster: the same band mapping (by band
    identity), the same crop-size rule (SourceRaster.crop_size_px) and the same reads, so training sees the crops
    that inference cuts."""

    def __init__(self, path: Path, config: GAIRConfig, ground_m: float, bands=None) -> None:
        from pyproj import CRS, Transformer

        self.path = path
        try:
            self.source = SourceRaster(path, config, bands)
        except GAIRError as exc:  # of several rasters, name the one at fault
            raise exc if path.name in str(exc) else GAIRError(f"{path.name}: {exc}") from None
        crs = CRS.from_user_input(self.source.ds.crs.to_wkt())
        self.to_crs = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        self.to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        self.crop_h, self.crop_w = self.source.crop_size_px(ground_m=ground_m)

    def plan(self, lon: float, lat: float, rng: np.random.Generator, tries: int) -> tuple[str, dict | None]:
        from rasterio.windows import Window

        ds, (h, w) = self.source.ds, (self.crop_h, self.crop_w)
        x, y = self.to_crs.transform(lon, lat)
        col, row = ~ds.transform * (x, y)
        if not (0 <= col < ds.width and 0 <= row < ds.height):
            return "no_raster", None
        c_lo, c_hi = max(math.floor(col) - w + 1, 0), min(math.floor(col), ds.width - w)
        r_lo, r_hi = max(math.floor(row) - h + 1, 0), min(math.floor(row), ds.height - h)
        if c_lo > c_hi or r_lo > r_hi:
            return "out_of_bounds", None
        for _ in range(tries):
            c0, r0 = int(rng.integers(c_lo, c_hi + 1)), int(rng.integers(r_lo, r_hi + 1))
            if ds.read_masks(self.source.indexes, window=Window(c0, r0, w, h)).min() == 0:
                continue  # nodata in one of the model's bands
            corners = [ds.transform * (c0 + dc, r0 + dr) for dc, dr in ((0, 0), (w, 0), (0, h), (w, h))]
            lons, lats = self.to_lonlat.transform([p[0] for p in corners], [p[1] for p in corners])
            return "ok", {"col_off": c0, "row_off": r0, "width": w, "height": h,
                          "query_x": f"{(col - c0) / w:.9f}", "query_y": f"{(row - r0) / h:.9f}",
                          "bbox_lon_min": f"{min(lons):.9f}", "bbox_lat_max": f"{max(lats):.9f}",
                          "bbox_lon_max": f"{max(lons):.9f}", "bbox_lat_min": f"{min(lats):.9f}"}
        return "nodata", None

    def write_crop(self, window: dict, path: Path, band_names: tuple[str, ...]) -> None:
        """The crop's model bands (raw values, model order, named by description) as a GeoTIFF of their own."""
        import rasterio
        from rasterio.windows import Window

        ds = self.source.ds
        win = Window(window["col_off"], window["row_off"], window["width"], window["height"])
        profile = {k: v for k, v in ds.profile.items() if k not in ("blockxsize", "blockysize")}
        profile.update(width=win.width, height=win.height, count=len(self.source.indexes), tiled=False,
                       transform=ds.window_transform(win), compress="deflate")
        with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as out:
            out.write(ds.read(self.source.indexes, window=win))
            out.descriptions = band_names

    def close(self) -> None:
        self.source.close()


def expand_rasters(items: list[str]) -> list[Path]:
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        paths += sorted(q for q in p.iterdir() if q.suffix.lower() in RASTER_SUFFIXES) if p.is_dir() else [p]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        raise GAIRError(f"rasters not found: {missing or items}")
    return paths


def build_manifest(rasters: list[str | Path], points: list[dict], out: str | Path, ground_m: float, seed: int = 0,
                   tries: int = 3, crops_dir: str | Path | None = None, require_photos: bool = True,
                   progress: Callable[[float], None] | None = None, cancel: Callable[[], bool] | None = None,
                   bands=None, model_config: GAIRConfig | None = None) -> BuildReport:
    """Plan one crop per point (see module doc) and write the manifest atomically; returns the counts.

    bands: as the inference pipeline's (pipeline.bands.resolve_bands); model_config: whose bands and ground
    sampling the crops are for (default GAIRConfig(); only its band list and gsd_m matter here).
    """
    if ground_m <= 0:
        raise GAIRError(f"crop ground size must be positive, got {ground_m} m")
    config = model_config or GAIRConfig()
    out = Path(out)
    base = out.resolve().parent
    rng = np.random.default_rng(seed)
    sources: list[_CropPlanner] = []
    try:
        for p in rasters:
            sources.append(_CropPlanner(Path(p), config, ground_m, bands))
    except BaseException:
        for source in sources:
            source.close()
        raise
    report = BuildReport(out)
    rows = []
    if crops_dir:
        Path(crops_dir).mkdir(parents=True, exist_ok=True)
    try:
        for i, point in enumerate(points):
            if cancel and cancel():
                raise Cancelled("building the manifest was cancelled; nothing was written")
            if require_photos and not (point["path"] and Path(point["path"]).is_file()):
                report.skipped["missing_photo"] += 1
                continue
            outcome, window, source = "no_raster", None, None
            for source in sources:
                found, window = source.plan(point["lon"], point["lat"], rng, tries)
                outcome = found if outcome == "no_raster" or found == "ok" else outcome
                if found == "ok":
                    break
            if outcome != "ok":
                report.skipped[outcome] += 1
                continue
            rs_path = source.path
            if crops_dir:
                rs_path = Path(crops_dir) / f"crop_{i:07d}.tif"
                source.write_crop(window, rs_path, tuple(config.rs_bands))
                window = {k: v for k, v in window.items() if k not in ("col_off", "row_off", "width", "height")}
            rows.append({**window, "rs_path": os.path.relpath(Path(rs_path).resolve(), base),
                         "sv_path": os.path.relpath(Path(point["path"]).resolve(), base) if point["path"] else "",
                         "lon": f"{point['lon']:.8f}", "lat": f"{point['lat']:.8f}",
                         "date": point["date"], "label": point["label"]})
            if progress and (i % 64 == 0 or i == len(points) - 1):
                progress((i + 1) / len(points))
    finally:
        for source in sources:
            source.close()
    if not rows:
        raise GAIRError(f"no usable samples: {dict(report.skipped)}; check that the photos lie inside the rasters "
                        f"and the rasters are larger than the {ground_m:.0f} m crop")
    write_manifest(rows, out)
    report.written = len(rows)
    return report


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.pretrain.build_dataset`: an alias of `python -m engine build-dataset`."""
    from ..cli.pretrain import run_alias

    return run_alias("build-dataset", argv)


if __name__ == "__main__":
    raise SystemExit(main())
