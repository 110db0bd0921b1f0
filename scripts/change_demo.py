"""Change between two dates on the real samples: the README's picture and numbers.

The first date is Detroit's Sentinel-2 crop; the second is the same crop with 3 % more reflectance everywhere
(another day's light) and a 90 x 100 px block of Tokyo's ground pasted in. Both are embedded with the same model
(default: the golden-weights model of tests/data/reference, the official architecture with deterministic weights;
--model for the official checkpoint) and compared with `python -m engine change`'s function. Prints the threshold,
the share of changed pixels and the IoU of the mask with the pasted block, and writes a PNG: the second date in true
colour, the cosine distance, and the Otsu mask with the pasted block outlined.

    .venv/bin/python scripts/change_demo.py docs/change_demo.png
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLES = ROOT / "data" / "samples"
BLOCK = (slice(50, 140), slice(120, 220))


def later_date(folder: Path) -> Path:
    import rasterio

    with rasterio.open(SAMPLES / "detroit_rs.tif") as ds:
        profile, data, descriptions = ds.profile, ds.read(), ds.descriptions
    with rasterio.open(SAMPLES / "tokyo_rs.tif") as ds:
        tokyo = ds.read()
    later = (data.astype(np.float64) * 1.03).astype(data.dtype)
    later[:, BLOCK[0], BLOCK[1]] = tokyo[:, BLOCK[0], BLOCK[1]]
    with rasterio.open(folder / "later.tif", "w", **profile) as ds:
        ds.write(later)
        ds.descriptions = descriptions
    return folder / "later.tif"


def true_colour(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as ds:
        names = list(ds.descriptions)
        rgb = np.stack([ds.read(names.index(b) + 1).astype(np.float64) for b in ("B4", "B3", "B2")], axis=-1)
    low, high = np.percentile(rgb, 2), np.percentile(rgb, 98)
    return (np.clip((rgb - low) / (high - low), 0, 1) * 255).astype(np.uint8)


def panel(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """A grey-to-orange ramp of values in [low, high] (NaN black)."""
    t = np.clip((values - low) / (high - low or 1), 0, 1)
    t = np.where(np.isfinite(t), t, 0)
    start, end = np.array([30, 30, 30]), np.array([255, 140, 0])
    return (start + t[..., None] * (end - start)).astype(np.uint8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("png", type=Path, help="picture to write")
    parser.add_argument("--model", help="checkpoint or bundle (default: the golden-weights model)")
    args = parser.parse_args()
    from PIL import Image

    import engine
    from engine.analysis.change import change

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.model:
            model = engine.load_model(args.model, device="cpu")
        else:
            import torch

            from tests.golden import write_official_checkpoint

            model = engine.load_model(write_official_checkpoint(folder / "golden.pth", torch.float32), device="cpu")
        kw = dict(dims=0, quicklook=False)  # one space for both dates: two PCA fits would be two spaces
        before = engine.embed_raster(SAMPLES / "detroit_rs.tif", folder / "before.tif", model, **kw)
        after_s2 = later_date(folder)
        after = engine.embed_raster(after_s2, folder / "after.tif", model, **kw)
        result = change(before, after, folder / "change.tif", mask_path=folder / "mask.tif", top_areas=3,
                        polygons_path=folder / "areas.gpkg")
        import rasterio

        with rasterio.open(result.path) as ds:
            distance = ds.read(1)
        with rasterio.open(folder / "mask.tif") as ds:
            changed = ds.read(1) == 1
        truth = np.zeros_like(changed)
        truth[BLOCK] = True
        iou = (changed & truth).sum() / (changed | truth).sum()
        print(f"threshold {result.threshold:.4f} ({result.threshold_method}, separation {result.separation:.2f}); "
              f"changed {result.changed_pixels / result.valid_pixels:.1%}; IoU with the pasted block {iou:.3f}; "
              f"top area: {result.areas[0].pixels} px, mean change {result.areas[0].mean_change:.3f}")
        mask = panel(changed.astype(float), 0, 1)
        edge = truth & ~np.pad(truth, 1)[2:, 1:-1] | truth & ~np.pad(truth, 1)[:-2, 1:-1] \
            | truth & ~np.pad(truth, 1)[1:-1, 2:] | truth & ~np.pad(truth, 1)[1:-1, :-2]
        mask[edge] = (0, 170, 255)
        gap = np.full((distance.shape[0], 6, 3), 255, np.uint8)
        heat = panel(distance, np.nanpercentile(distance, 1), np.nanpercentile(distance, 99.5))
        picture = np.concatenate([true_colour(after_s2), gap, heat, gap, mask], axis=1)
        image = Image.fromarray(picture)
        image.resize((image.width * 2, image.height * 2), Image.NEAREST).save(args.png)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
