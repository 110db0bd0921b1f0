"""Benchmark the analysis scans against this machine's memory read bandwidth, measured in the same run.

The rasters are written in the default format of `embed-raster` (engine.params: int8 today, plain tiles).
Prints a table, then one RESULT line with every figure as the last line:
- memory bandwidth: numpy sum over a 1 GiB float32 array (one thread, best of 5);
- similarity scan: `cosine_scan` over the raster's tile-aligned float32 blocks already in memory (one BLAS
  thread), as pixels/s and GB/s, for a 64-dim and a 768-dim embedding raster; similarity_vs_membw is the lower of
  the two fractions (target >= 0.5);
- similarity_e2e_mpix_s: `similarity_search` from a warm file on the 2048 x 2048 x 64 raster: read, score,
  write the similarity GeoTIFF and find the top-10 peaks (target >= 15 Mpix/s on 2 cores); best of 3;
- kmeans_mpix_per_s: end-to-end `cluster_embeddings` apply stage (read, assign, write) on the same raster;
- classifier_apply_mpix_s: end-to-end `apply_model` of a logistic classifier (read, predict, write classes and
  confidence) on the same raster;
- maptool_first_heatmap_s: the map tool's first heatmap of the whole 2048 x 2048 x 64 raster: `fewshot_search`
  with a positive and a negative click, at most MAPTOOL_COARSE_PIXELS pixels (read from the overviews), top-10,
  written (engine time; the worker adds a few ms); best of 3 (target < 1 s).

Usage: python scripts/bench_analysis.py [--side64 2048] [--side768 384]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import params
from engine.analysis import apply_model, cluster_embeddings, similarity_search, train_classifier
from engine.analysis.fewshot import fewshot_search
from engine.analysis.similarity import cosine_scan, query_matrix
from engine.io.embedding_raster import EmbeddingRaster
from engine.io.embedding_writer import EmbeddingRasterWriter

DEFAULT_DTYPE = params.operation("embed_raster").param("dtype").default


class MemoryBandwidth:
    """Single-threaded numpy sum over a 1 GiB float32 array (a pure streaming read); keeps the best time seen."""

    def __init__(self, gib: float = 1.0) -> None:
        self.array = np.ones(int(gib * 2**30) // 4, np.float32)
        self.array.sum()
        self.best = float("inf")

    @property
    def bytes_per_s(self) -> float:
        return self.array.nbytes / self.best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def make_raster(path: Path, dims: int, side: int, seed: int = 0) -> Path:
    """Random embeddings around 8 prototypes (so classes exist), in the default data type and layout."""
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(8, dims)).astype(np.float32)
    with EmbeddingRasterWriter(path, width=side, height=side, crs="EPSG:32633", dtype=DEFAULT_DTYPE,
                               scale=1 / 4000 if DEFAULT_DTYPE == "int16" else None,
                               transform=from_origin(500000, 4200000, 10, 10), dims=dims, model="bench") as writer:
        for row in range(0, side, 256):
            h = min(256, side - row)
            classes = (np.arange(side)[None, :] // 64 + (row + np.arange(h))[:, None] // 64) % 8
            block = prototypes[classes].transpose(2, 0, 1) + rng.normal(size=(dims, h, side)).astype(np.float32)
            writer.write(Window(0, row, side, h), block)
    return path


def scan_in_memory(path: Path, membw: MemoryBandwidth, repeats: int = 7) -> tuple[float, float, int]:
    """Best cosine_scan time over the raster's blocks held in memory, and the best bandwidth-sum time measured
    interleaved with it (same machine load); also the bytes scanned."""
    from threadpoolctl import threadpool_limits

    with EmbeddingRaster(path) as raster:
        blocks = [block.reshape(raster.dims, -1).copy() for _, block in raster.iter_blocks()]
        query = query_matrix(np.random.default_rng(1).normal(size=(1, raster.dims)), "mean")
    outs = [np.empty(b.shape[1], np.float32) for b in blocks]
    kernel = sum_time = float("inf")
    with threadpool_limits(1):
        for _ in range(repeats):
            sum_time = min(sum_time, _timed(membw.array.sum))
            kernel = min(kernel, _timed(lambda: [cosine_scan(b, query, o) for b, o in zip(blocks, outs)]))
    membw.best = min(membw.best, sum_time)
    return kernel, sum_time, sum(b.nbytes for b in blocks)


def bench_similarity(path: Path, out_dir: Path, membw: MemoryBandwidth) -> dict:
    kernel, sum_time, nbytes = scan_in_memory(path, membw)
    bandwidth = membw.array.nbytes / sum_time
    with EmbeddingRaster(path) as raster:
        dims, pixels = raster.dims, raster.width * raster.height
    x, y = 500000 + 55, 4200000 - 55  # a pixel near the top-left corner
    similarity_search(path, out_dir / "sim.tif", points=[(x, y)], top_k=10)  # warm the page cache
    end_to_end = min(_timed(lambda: similarity_search(path, out_dir / "sim.tif", points=[(x, y)], top_k=10))
                     for _ in range(3))
    return {"dims": dims, "pixels": pixels, "gb": nbytes / 1e9, "kernel_pix_s": pixels / kernel,
            "kernel_gb_s": nbytes / kernel / 1e9, "membw_gb_s": bandwidth / 1e9,
            "fraction": nbytes / kernel / bandwidth,
            "e2e_pix_s": pixels / end_to_end, "e2e_gb_s": nbytes / end_to_end / 1e9}


def bench_kmeans(path: Path, out_dir: Path, k: int = 8) -> dict:
    marks: dict[str, float] = {}

    def progress(fraction: float) -> None:
        if fraction >= 0.55 and "apply" not in marks:  # cluster_embeddings reports 0.55 when fitting is done
            marks["apply"] = time.perf_counter()

    cluster_embeddings(path, out_dir / "warm.tif", k=k, sample_size=20000)
    result = cluster_embeddings(path, out_dir / "clusters.tif", k=k, sample_size=20000, progress=progress)
    apply_s = time.perf_counter() - marks["apply"]
    pixels = sum(result.counts)
    return {"k": k, "pixels": pixels, "total_s": result.seconds, "apply_s": apply_s, "mpix_s": pixels / apply_s / 1e6}


def bench_classifier(path: Path, out_dir: Path) -> dict:
    """Train a logistic classifier on 400 labelled points (labels from the raster's own prototypes), then time
    apply_model writing the class and confidence rasters."""
    import shapely

    from engine.analysis.pixels import pixel_centres
    from engine.io.embedding_raster import sample_pixels
    from engine.io.vectors import write_gpkg

    with EmbeddingRaster(path) as raster:
        _, rows, cols = sample_pixels(raster, 400, seed=3)
        xs, ys = pixel_centres(raster, rows, cols)
        crs, pixels = raster.crs, raster.width * raster.height
    labels = np.array([f"c{v}" for v in (cols // 64 + rows // 64) % 8], dtype=object)
    write_gpkg(out_dir / "labels.gpkg", shapely.points(xs, ys), {"cls": labels}, crs, layer="labels")
    train_classifier(path, out_dir / "labels.gpkg", "cls", out_dir / "model.joblib", folds=2)
    run = lambda: apply_model(path, out_dir / "model.joblib", out_dir / "cls.tif",  # noqa: E731
                              confidence_path=out_dir / "conf.tif")
    run()
    seconds = min(_timed(run) for _ in range(2))
    return {"pixels": pixels, "seconds": seconds, "mpix_s": pixels / seconds / 1e6}


def bench_first_heatmap(path: Path, out_dir: Path) -> dict:
    """Seconds of the map tool's coarse first heatmap of the whole raster (fewshot_search, max_pixels)."""
    from engine.params.fewshot import MAPTOOL_COARSE_PIXELS

    clicks = {"positives": [(500000 + 55, 4200000 - 55)], "negatives": [(500000 + 1005, 4200000 - 2005)]}
    run = lambda: fewshot_search(path, out_dir / "coarse.tif", **clicks, top_k=10,  # noqa: E731
                                 max_pixels=MAPTOOL_COARSE_PIXELS, hits_path=out_dir / "coarse.gpkg")
    result = run()
    return {"seconds": min(_timed(run) for _ in range(3)), "factor": result.factor,
            "pixels": result.width * result.height}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side64", type=int, default=2048, help="side in pixels of the 64-dim raster")
    parser.add_argument("--side768", type=int, default=384, help="side in pixels of the 768-dim raster")
    args = parser.parse_args()
    membw = MemoryBandwidth()
    with tempfile.TemporaryDirectory(prefix="gair-bench-") as folder:
        folder = Path(folder)
        rows = []
        for dims, side in ((64, args.side64), (768, args.side768)):
            path = make_raster(folder / f"emb{dims}.tif", dims, side)
            rows.append(bench_similarity(path, folder, membw))
            if dims == 64:
                km = bench_kmeans(path, folder)
                clf = bench_classifier(path, folder)
                first = bench_first_heatmap(path, folder)
            path.unlink()
    print(f"embedding rasters: {DEFAULT_DTYPE} (the embed-raster default), tiled {256}, "
          f"{'plain tiles' if DEFAULT_DTYPE == 'int8' else 'ZSTD level 1'}")
    print(f"memory read bandwidth (numpy sum over 1 GiB, 1 thread, best): {membw.bytes_per_s / 1e9:.2f} GB/s")
    print(f"{'dims':>5} {'pixels':>9} {'GB':>6} | {'scan Mpix/s':>11} {'scan GB/s':>9} {'membw GB/s':>10} "
          f"{'vs membw':>8} | {'end-to-end Mpix/s':>17} {'f32 GB/s':>9}")
    for r in rows:
        print(f"{r['dims']:>5} {r['pixels']:>9} {r['gb']:>6.2f} | {r['kernel_pix_s'] / 1e6:>11.2f} "
              f"{r['kernel_gb_s']:>9.2f} {r['membw_gb_s']:>10.2f} {r['fraction']:>8.2f} | "
              f"{r['e2e_pix_s'] / 1e6:>17.2f} {r['e2e_gb_s']:>9.2f}")
    print(f"k-means (k={km['k']}, 64 dims) apply: {km['pixels']} pixels in {km['apply_s']:.2f}s "
          f"= {km['mpix_s']:.2f} Mpix/s end-to-end (read, assign, write); whole cluster_embeddings "
          f"{km['total_s']:.2f}s")
    print(f"classifier (logistic, 64 dims) apply: {clf['pixels']} pixels in {clf['seconds']:.2f}s "
          f"= {clf['mpix_s']:.2f} Mpix/s end-to-end (read, predict, write classes + confidence)")
    grid = (f"every {first['factor']}th pixel = {first['pixels']} px, from the overviews" if first["factor"] > 1
            else f"all {first['pixels']} px: no larger than a coarse map")
    print(f"map tool first heatmap (whole 64-dim raster, {grid}): {first['seconds']:.3f}s")
    fraction = min(r["fraction"] for r in rows)
    e2e = rows[0]["e2e_pix_s"] / 1e6
    print(f"RESULT similarity_vs_membw={fraction:.3f} similarity_e2e_mpix_s={e2e:.3f} "
          f"kmeans_mpix_per_s={km['mpix_s']:.3f} classifier_apply_mpix_s={clf['mpix_s']:.3f} "
          f"maptool_first_heatmap_s={first['seconds']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
