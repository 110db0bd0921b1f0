"""A procedural world for tests and the demo: land cover, Sentinel-2-like rasters, photos at points, labels.

Land cover comes from smooth random class fields plus a trend across the region (so the class mix, and with it
location, carries signal). Rasters render per-class 10-band spectra with class textures (cropland and grassland
differ mostly in texture), a smooth illumination field, haze and sensor noise; a corner is nodata, as at a swath
edge. Photos are rendered from the class at the exact photo point
(with the neighbourhood's dominant class on the horizon), so an embedding localized at the point beats the crop
average. Label points are separate random points with the class under them.

    python -m engine synthetic OUT_DIR [--size 768] [--photos 1500] [--labels 600] [--crs EPSG:4326]
    (`python -m engine.pretrain.synthetic ...` is an alias)
"""
from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..config import S2_BANDS
from ..io.files import atomic_path

CLASSES = ("water", "forest", "cropland", "grassland", "built_up")
# Surface reflectance x 10000 per band (B2 B3 B4 B5 B6 B7 B8 B8A B11 B12), typical of each cover.
SPECTRA = np.array([
    [700, 650, 420, 330, 260, 220, 170, 160, 110, 90],
    [320, 520, 330, 760, 1900, 2500, 2800, 2950, 1500, 720],
    [580, 880, 740, 1230, 2030, 2500, 2780, 2880, 2250, 1400],
    [560, 860, 700, 1200, 2000, 2450, 2700, 2800, 2200, 1350],
    [1150, 1250, 1350, 1450, 1550, 1650, 1750, 1800, 2150, 1950],
], dtype=np.float32)
# Class trend across the region (x east, y north, both in [-1, 1]): the class mix shifts with location.
TRENDS = np.array([[-0.8, 0.8], [0.0, -0.9], [0.9, -0.2], [-0.3, -0.1], [0.6, 0.9]], dtype=np.float32)
PHOTO_COLOURS = np.array([[40, 85, 150], [35, 95, 40], [185, 175, 70], [95, 165, 65], [128, 126, 130]], np.float32)
SKY = np.array([150, 190, 235], np.float32)


@dataclass(frozen=True)
class WorldSpec:
    centre_lonlat: tuple[float, float] = (11.35, 48.10)  # Upper Bavaria; UTM zone 32N
    truth_crs: str = "EPSG:32632"
    raster_crs: str = ""  # "" = the truth CRS; anything else is reprojected (nearest)
    gsd_m: float = 10.0
    size_px: int = 768
    patch_sigma_px: float = 8.0  # land-cover patches of ~2-3 tokens: several per crop, so the point matters
    trend_strength: float = 1.2
    illumination: float = 0.3  # amplitude of the smooth multiplicative brightness field
    haze: float = 600.0  # amplitude (DN) of a smooth additive haze, strongest in blue, fading towards SWIR
    noise: float = 0.02  # relative sensor noise
    n_photos: int = 1500
    n_labels: int = 600
    photo_size: int = 40
    nodata_corner: float = 0.12  # side of the nodata triangle, as a fraction of the raster side
    outside_fraction: float = 0.01  # photos placed just outside the raster (counted by the dataset builder)
    seed: int = 0


@dataclass
class SyntheticWorld:
    root: Path
    spec: WorldSpec
    raster: Path
    landcover: Path
    photos_csv: Path
    labels_csv: Path
    classes: tuple[str, ...] = CLASSES

    def class_at(self, lonlat: np.ndarray) -> np.ndarray:
        """Land-cover class index under [lon, lat] points (-1 outside the world)."""
        import rasterio
        from pyproj import Transformer

        lonlat = np.atleast_2d(np.asarray(lonlat, dtype=np.float64))
        with rasterio.open(self.landcover) as ds:
            x, y = Transformer.from_crs("EPSG:4326", ds.crs, always_xy=True).transform(lonlat[:, 0], lonlat[:, 1])
            rows, cols = rasterio.transform.rowcol(ds.transform, x, y)
            rows, cols = np.asarray(rows), np.asarray(cols)
            grid = ds.read(1)
        inside = (rows >= 0) & (rows < grid.shape[0]) & (cols >= 0) & (cols < grid.shape[1])
        out = np.full(len(lonlat), -1, dtype=np.int64)
        out[inside] = grid[rows[inside], cols[inside]]
        return out


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-8)


def land_cover(spec: WorldSpec, rng: np.random.Generator) -> np.ndarray:
    """(H, W) class indices: argmax of smooth per-class fields plus the regional trends."""
    n = spec.size_px
    ys, xs = np.meshgrid(np.linspace(1, -1, n, dtype=np.float32), np.linspace(-1, 1, n, dtype=np.float32),
                         indexing="ij")
    logits = np.stack([
        _smooth_noise(rng, (n, n), spec.patch_sigma_px) + spec.trend_strength * (tx * xs + ty * ys)
        for tx, ty in TRENDS
    ])
    return logits.argmax(axis=0).astype(np.uint8)


def _textures(cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-pixel multiplicative texture of each class: field stripes, building blocks, mottled canopy."""
    n = cover.shape[0]
    rows, cols = np.mgrid[0:n, 0:n].astype(np.float32)
    parcel = (rows // 16).astype(int) * (n // 16 + 1) + (cols // 16).astype(int)
    angle = rng.uniform(0, np.pi, parcel.max() + 1)[parcel]
    stripes = np.sin(2 * np.pi * (cols * np.cos(angle) + rows * np.sin(angle)) / 6.0)
    blocks = np.kron(rng.standard_normal((n // 3 + 1, n // 3 + 1)), np.ones((3, 3)))[:n, :n]
    canopy = _smooth_noise(rng, (n, n), 1.5)
    white = rng.standard_normal((n, n))
    calm = _smooth_noise(rng, (n, n), 3.0)
    amp = np.array([0.03, 0.15, 0.3, 0.05, 0.25], np.float32)
    pattern = np.select([cover == k for k in range(5)], [calm, canopy, stripes, white, blocks])
    return 1.0 + amp[cover] * pattern.astype(np.float32)


def render_s2(cover: np.ndarray, spec: WorldSpec, rng: np.random.Generator) -> np.ndarray:
    """(10, H, W) uint16 DN with a nodata (0) triangle in the south-east corner."""
    n = cover.shape[0]
    illumination = 1.0 + spec.illumination * _smooth_noise(rng, (n, n), 60.0)
    signal = SPECTRA[cover].transpose(2, 0, 1) * (_textures(cover, rng) * illumination)[None]
    haze = np.maximum(spec.haze * (1.0 + _smooth_noise(rng, (n, n), 40.0)), 0.0)
    signal += np.linspace(1.0, 0.1, len(S2_BANDS), dtype=np.float32)[:, None, None] * haze[None]
    noisy = signal * (1.0 + spec.noise * rng.standard_normal(signal.shape, dtype=np.float32))
    dn = np.clip(noisy, 1, 10000).astype(np.uint16)
    side = int(spec.nodata_corner * n)
    if side:
        rows, cols = np.mgrid[0:n, 0:n]
        dn[:, (rows - (n - side)) + (cols - (n - side)) > side] = 0
    return dn


def render_photo(cls: int, horizon_cls: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) uint8 ground-level view: the point's class in front, a neighbour class on the horizon."""
    p = size
    img = np.empty((p, p, 3), np.float32)
    horizon = int(p * 0.4) + int(rng.integers(-3, 4))
    rows, cols = np.mgrid[0:p, 0:p].astype(np.float32)
    sky = SKY * rng.uniform(0.8, 1.1) * (0.85 + 0.15 * rows[:horizon, :, None] / max(horizon, 1))
    img[:horizon] = sky
    ground_rows, ground_cols = rows[horizon:] - horizon, cols[horizon:]
    phase = rng.uniform(0, 2 * np.pi)
    if cls == 0:  # water: horizontal ripples
        pattern = 0.15 * np.sin(ground_rows * 1.3 + phase)
    elif cls == 1:  # forest: dark trunks
        pattern = np.where((ground_cols + phase * 3) % 6 < 2, -0.45, 0.1 * rng.standard_normal(ground_rows.shape))
    elif cls == 2:  # cropland: rows converging on the horizon
        pattern = 0.25 * np.sin((ground_cols - p / 2) / (ground_rows + 1.5) * 6 + phase)
    elif cls == 3:  # grassland: fine grain
        pattern = 0.12 * rng.standard_normal(ground_rows.shape)
    else:  # built-up: facades with windows
        pattern = np.where((ground_rows.astype(int) % 4 < 2) & (ground_cols.astype(int) % 5 < 2), -0.35, 0.05)
    img[horizon:] = PHOTO_COLOURS[cls] * (1.0 + pattern[..., None])
    band = slice(max(horizon - 3, 0), horizon)
    img[band] = PHOTO_COLOURS[horizon_cls] * 0.9
    if cls in (1, 4):  # trees and buildings rise above the horizon
        tops = horizon - rng.integers(4, max(horizon, 5), size=p // 4 + 1)
        for i, top in enumerate(tops):
            img[max(top, 0):horizon, i * 4:(i + 1) * 4] = PHOTO_COLOURS[cls] * rng.uniform(0.75, 1.05)
    img *= 1.0 + 0.08 * rng.standard_normal(3)
    img += 4.0 * rng.standard_normal(img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _neighbour_class(cover: np.ndarray, row: int, col: int, cls: int, radius: int = 6) -> int:
    window = cover[max(row - radius, 0):row + radius + 1, max(col - radius, 0):col + radius + 1].ravel()
    counts = np.bincount(window, minlength=len(CLASSES))
    counts[cls] = 0
    return int(counts.argmax()) if counts.any() else cls


def _write_geotiff(path: Path, data: np.ndarray, crs: str, transform, nodata, descriptions=None) -> None:
    import rasterio

    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "crs": crs, "transform": transform, "nodata": nodata, "tiled": True,
               "blockxsize": 256, "blockysize": 256}
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as ds:
        ds.write(data)
        for i, name in enumerate(descriptions or []):
            ds.set_band_description(i + 1, name)


def _reproject(dn: np.ndarray, src_transform, spec: WorldSpec):
    import rasterio
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    n = dn.shape[1]
    bounds = rasterio.transform.array_bounds(n, n, src_transform)
    transform, width, height = calculate_default_transform(
        spec.truth_crs, spec.raster_crs, n, n, left=bounds[0], bottom=bounds[1], right=bounds[2], top=bounds[3])
    out = np.zeros((dn.shape[0], height, width), dn.dtype)
    reproject(dn, out, src_transform=src_transform, src_crs=spec.truth_crs, dst_transform=transform,
              dst_crs=spec.raster_crs, resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
    return out, transform


def make_world(out_dir: str | Path, spec: WorldSpec | None = None) -> SyntheticWorld:
    """Write raster, land-cover truth, photos and tables under out_dir; deterministic in spec.seed."""
    import rasterio
    from PIL import Image
    from pyproj import Transformer

    spec = spec or WorldSpec()
    root = Path(out_dir)
    (root / "photos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    n, gsd = spec.size_px, spec.gsd_m
    to_utm = Transformer.from_crs("EPSG:4326", spec.truth_crs, always_xy=True)
    to_lonlat = Transformer.from_crs(spec.truth_crs, "EPSG:4326", always_xy=True)
    cx, cy = to_utm.transform(*spec.centre_lonlat)
    left, top = round(cx - n * gsd / 2), round(cy + n * gsd / 2)
    transform = rasterio.transform.from_origin(left, top, gsd, gsd)

    cover = land_cover(spec, rng)
    dn = render_s2(cover, spec, rng)
    _write_geotiff(root / "landcover.tif", cover[None], spec.truth_crs, transform, None, ["class"])
    raster_crs, raster_transform = spec.truth_crs, transform
    if spec.raster_crs and spec.raster_crs != spec.truth_crs:
        dn, raster_transform = _reproject(dn, transform, spec)
        raster_crs = spec.raster_crs
    raster = root / "sentinel2.tif"
    _write_geotiff(raster, dn, raster_crs, raster_transform, 0, list(S2_BANDS))

    def sample_points(count: int, outside: float):
        fx, fy = rng.uniform(0, 1, count), rng.uniform(0, 1, count)
        away = rng.uniform(0, 1, count) < outside
        fx[away] = 1.0 + rng.uniform(0.01, 0.05, away.sum())  # just east of the raster
        x, y = left + fx * n * gsd, top - fy * n * gsd
        lon, lat = to_lonlat.transform(x, y)
        rows, cols = np.minimum((fy * n).astype(int), n - 1), np.minimum((fx * n).astype(int), n - 1)
        return np.asarray(lon), np.asarray(lat), rows, cols, away

    lon, lat, rows, cols, away = sample_points(spec.n_photos, spec.outside_fraction)
    start = dt.date(2020, 1, 1)
    photo_rows = []
    for i in range(spec.n_photos):
        cls = int(cover[rows[i], cols[i]])
        img = render_photo(cls, _neighbour_class(cover, rows[i], cols[i], cls), rng, spec.photo_size)
        name = f"photos/p{i:05d}.png"
        Image.fromarray(img).save(root / name)
        date = start + dt.timedelta(days=int(rng.integers(0, 4 * 365)))
        photo_rows.append({"path": name, "lon": f"{lon[i]:.7f}", "lat": f"{lat[i]:.7f}", "date": date.isoformat(),
                           "label": "" if away[i] else CLASSES[cls]})
    photos_csv = root / "photos.csv"
    _write_csv(photos_csv, photo_rows)

    lon, lat, rows, cols, _ = sample_points(spec.n_labels * 2, 0.0)
    valid = away_from_nodata(spec, rows, cols)
    label_rows = [{"lon": f"{lon[i]:.7f}", "lat": f"{lat[i]:.7f}", "label": CLASSES[cover[rows[i], cols[i]]],
                   "class_id": int(cover[rows[i], cols[i]])} for i in np.flatnonzero(valid)[: spec.n_labels]]
    labels_csv = root / "labels.csv"
    _write_csv(labels_csv, label_rows)
    (root / "world.json").write_text(json.dumps({"spec": asdict(spec), "classes": CLASSES}, indent=2))
    return SyntheticWorld(root, spec, raster, root / "landcover.tif", photos_csv, labels_csv)


def away_from_nodata(spec: WorldSpec, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Points at least one nodata-triangle side away from the nodata corner, so crops around them are clean."""
    side = int(spec.nodata_corner * spec.size_px)
    return rows + cols <= 2 * spec.size_px - 2 * side if side else np.ones(len(rows), bool)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.pretrain.synthetic`: an alias of `python -m engine synthetic`."""
    from ..cli.pretrain import run_alias

    return run_alias("synthetic", argv)


if __name__ == "__main__":
    raise SystemExit(main())
