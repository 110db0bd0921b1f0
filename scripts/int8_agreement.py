"""How much int8 embedding rasters change the analyses, measured on the real samples (data/samples).

Each sample is embedded once (float32, 64 PCA dims, the golden-weights model of tests/data/reference: the official
architecture with deterministic weights) and converted to int8 and int16 with the project's writer (the same field,
so only the encoding differs). Then, per encoding against float32:
- similarity: 5 seeded reference pixels per sample -> Pearson r of the maps and the max |difference|;
- k-means (k=6, same seed): adjusted Rand index of the class maps, against float32 and against float32 scaled to
  unit length (int8 keeps directions only, so this separates quantisation from normalisation);
- classifier: logistic regression on 300 seeded points labelled by the float32 k-means classes (a stand-in for a
  land-cover layer): cross-validated accuracy on each encoding, and the share of pixels whose applied class agrees.

Prints a table and `RESULT ...` with the worst case over the samples. Usage: python scripts/int8_agreement.py
(about a minute on 2 cores; `--model PATH` to use another checkpoint or bundle).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.analysis import apply_model, cluster_embeddings, similarity_search, train_classifier  # noqa: E402
from engine.io.embedding_raster import EmbeddingRaster  # noqa: E402
from engine.io.embedding_writer import EmbeddingRasterWriter, int16_scale_offset  # noqa: E402

SAMPLES = ("detroit", "sacramento", "tokyo")


def golden_model(folder: Path):
    import torch

    import engine
    from tests.golden import write_official_checkpoint

    return engine.load_model(write_official_checkpoint(folder / "golden.pth", torch.float32), device="cpu")


def convert(src: Path, dst: Path, dtype: str) -> Path:
    """The same field in another encoding (same space and PCA sidecar); "unit" = float32 scaled to unit length."""
    from rasterio.windows import Window

    with EmbeddingRaster(src) as er:
        data = er.read_block(Window(0, 0, er.width, er.height))
        if dtype == "unit":
            data, dtype = data / np.linalg.norm(data, axis=0, keepdims=True), "float32"
        space = er.meta.space
        scale = offset = None
        if dtype == "int16":
            scale, offset = int16_scale_offset(data.reshape(er.dims, -1).T[np.isfinite(data[0].ravel())])
        with EmbeddingRasterWriter(dst, width=er.width, height=er.height, crs=er.crs, transform=er.transform,
                                   dims=er.dims, model=space.model, query_mode=space.mode,
                                   nili_convention=space.convention, options=dict(space.options), dtype=dtype,
                                   pca=er.pca, scale=scale, offset=offset, crop_pixels=er.meta.crop_pixels,
                                   crop_ground_m=er.meta.crop_ground_m) as writer:
            writer.write(Window(0, 0, er.width, er.height), data)
    return dst


def read_map(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read(1)


def valid_pixels(path: Path, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, object]:
    from engine.analysis.pixels import pixel_centres
    from engine.io.embedding_raster import sample_pixels

    with EmbeddingRaster(path) as er:
        _, rows, cols = sample_pixels(er, count, seed)
        xs, ys = pixel_centres(er, rows, cols)
        return np.asarray(xs), np.asarray(ys), er.crs


def compare(float_path: Path, other: Path, work: Path, unit: Path) -> dict:
    import shapely
    from sklearn.metrics import adjusted_rand_score

    from engine.io.vectors import write_gpkg

    xs, ys, _ = valid_pixels(float_path, 5, seed=1)
    corr, maxdiff = [], []
    for i, (x, y) in enumerate(zip(xs, ys)):
        a = read_map(similarity_search(float_path, work / f"sf{i}.tif", points=[(x, y)], top_k=0).path)
        b = read_map(similarity_search(other, work / f"so{i}.tif", points=[(x, y)], top_k=0).path)
        ok = np.isfinite(a) & np.isfinite(b)
        corr.append(np.corrcoef(a[ok], b[ok])[0, 1])
        maxdiff.append(np.abs(a[ok] - b[ok]).max())
    ka = read_map(cluster_embeddings(float_path, work / "kf.tif", k=6, seed=0).path)
    kb = read_map(cluster_embeddings(other, work / "ko.tif", k=6, seed=0).path)
    ku = read_map(cluster_embeddings(unit, work / "ku.tif", k=6, seed=0).path)
    ok = (ka > 0) & (kb > 0)
    ari = adjusted_rand_score(ka[ok], kb[ok])
    ari_unit = adjusted_rand_score(ku[ok], kb[ok])
    # points labelled by the float32 k-means classes
    px, py, crs = valid_pixels(float_path, 300, seed=2)
    with EmbeddingRaster(float_path) as er:
        from engine.analysis.pixels import world_to_pixel

        rows, cols = world_to_pixel(er, px, py)
    labels = np.array([f"c{v}" for v in ka[rows, cols]], dtype=object)
    write_gpkg(work / "labels.gpkg", shapely.points(px, py), {"cls": labels}, crs, layer="labels")
    acc, maps = {}, {}
    for name, path in (("float32", float_path), ("other", other)):
        result = train_classifier(path, work / "labels.gpkg", "cls", work / f"{name}.joblib", folds=5, seed=0)
        acc[name] = result.report["overall_accuracy"]
        maps[name] = read_map(apply_model(path, work / f"{name}.joblib", work / f"{name}_cls.tif").path)
    ok = (maps["float32"] > 0) & (maps["other"] > 0)
    agree = float(np.mean(maps["float32"][ok] == maps["other"][ok]))
    return {"sim_r": float(min(corr)), "sim_maxdiff": float(max(maxdiff)), "kmeans_ari": float(ari),
            "kmeans_ari_unit": float(ari_unit), "acc_float32": acc["float32"], "acc_other": acc["other"],
            "class_agreement": agree}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint or bundle (default: the golden-weights model)")
    args = parser.parse_args()
    from engine.pipeline import embed_raster

    rows = []
    with tempfile.TemporaryDirectory(prefix="gair-int8-") as folder:
        folder = Path(folder)
        import engine

        model = engine.load_model(args.model, device="cpu") if args.model else golden_model(folder)
        for name in SAMPLES:
            work = folder / name
            work.mkdir()
            f32 = embed_raster(ROOT / "data" / "samples" / f"{name}_rs.tif", work / "f32.tif", model,
                               dtype="float32", quicklook=False)
            sizes = {"float32": f32.stat().st_size}
            unit = convert(f32, work / "unit.tif", "unit")
            for dtype in ("int8", "int16"):
                other = convert(f32, work / f"{dtype}.tif", dtype)
                sizes[dtype] = other.stat().st_size
                (work / dtype).mkdir()
                rows.append({"sample": name, "dtype": dtype, "bytes": sizes[dtype] / sizes["float32"],
                             **compare(f32, other, work / dtype, unit)})
    print(f"{'sample':>10} {'dtype':>6} {'size':>5} | {'sim r (min)':>11} {'sim max|d|':>10} | "
          f"{'k-means ARI':>11} {'vs unit f32':>11} | "
          f"{'CV acc f32':>10} {'CV acc':>7} {'same class':>10}")
    for r in rows:
        print(f"{r['sample']:>10} {r['dtype']:>6} {r['bytes']:>5.2f} | {r['sim_r']:>11.5f} "
              f"{r['sim_maxdiff']:>10.4f} | {r['kmeans_ari']:>11.3f} {r['kmeans_ari_unit']:>11.3f} | "
              f"{r['acc_float32']:>10.3f} {r['acc_other']:>7.3f} {r['class_agreement']:>10.3f}")
    for dtype in ("int8", "int16"):
        sel = [r for r in rows if r["dtype"] == dtype]
        print(f"RESULT {dtype}_sim_r_min={min(r['sim_r'] for r in sel):.5f} "
              f"{dtype}_sim_maxdiff={max(r['sim_maxdiff'] for r in sel):.4f} "
              f"{dtype}_kmeans_ari_min={min(r['kmeans_ari'] for r in sel):.3f} "
              f"{dtype}_accuracy_drop_max={max(r['acc_float32'] - r['acc_other'] for r in sel):.3f} "
              f"{dtype}_class_agreement_min={min(r['class_agreement'] for r in sel):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
