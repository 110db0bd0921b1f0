"""Throughput and memory of the embedding pipeline with the official-size model (random weights), in one run.

Prints a table and, last, `RESULT km2_per_min=<x> encoder_vs_sgemm=<x> onnx_vs_torch=<speedup> rss_4x_vs_1x=<x>
area_vs_encoder_bound=<x> encodes_per_px=<x> seam_figure=<x> int8_vs_fp32=<speedup> int8_cosine=<mean>
int8_cosine_min=<worst> int8_cosine_centred=<mean>`:
  km2_per_min            end-to-end embed_raster over a synthetic 10 m Sentinel-2 raster (the 4x run, 2048 px a side
                         by default), --dims output: the pipeline's rate. Each run is a fresh process whose start-up
                         (imports, model load, the model's fingerprint, importing scikit-learn for the PCA) happens
                         before the timer; the table gives it its own row
  encoder_vs_sgemm       RS encoder GFLOP/s (analytic FLOPs) over this machine's float32 matmul GFLOP/s
  onnx_vs_torch          RS encoder time with torch / with onnxruntime (> 1: onnxruntime faster)
  rss_4x_vs_1x           peak RSS of embed_raster on 4x the pixels over 1x (each in a fresh process)
  area_vs_encoder_bound  km2_per_min over the rate the encoder alone gives with no overlap (crops/s x crop area):
                         what the overlap, the crops past the raster's edge and the fields/blending/writing cost
  encodes_per_px         crops the 4x run encoded x crop area / raster area: how often each pixel went through
                         the encoder (overlap and edge crops); area_vs_encoder_bound can be at most about 1 / this
  seam_figure            engine.pipeline.quality.seam_figure of the real Detroit sample embedded with the golden
                         test's official-size weights (worst step over median step; a border frame gave 8-9)
  int8_vs_fp32           RS encoder time with float32 onnxruntime / with the int8 encoders (backend onnx-int8)
  int8_cosine            mean (and _min worst) per-pixel cosine of int8 vs float32 embeddings on data/samples;
                         _centred: the same after subtracting the samples' mean float32 embedding

--overlap-sweep adds the seams of the other real samples and a table: overlap vs encodes per pixel (whole tile),
seam figure and cosine to a 0.75-overlap field on a 640 px scene (official-size golden weights), the numbers the
default overlap was chosen from.

    python scripts/bench_embed.py [--side 2048] [--dims 32] [--batch 8] [--threads N] [--overlap-sweep]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def encoder_flops(cfg) -> float:
    """Multiply-adds x 2 of one RS crop through the encoder (patch embedding, attention and MLP matmuls)."""
    n, d = cfg.rs_tokens, cfg.embed_dim
    patch = 2 * n * cfg.rs_channels * cfg.rs_patch_size**2 * d
    per_layer = 2 * n * d * d * (3 + 1 + 2 * cfg.rs_mlp_ratio) + 2 * 2 * n * n * d
    return patch + cfg.rs_depth * per_layer


def best_time(fn, warmups: int, repeats: int = 1) -> float:
    """Best wall time of `repeats` calls after `warmups` untimed ones."""
    for _ in range(warmups):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def matmul_and_encoder(model, batch: int, rounds: int = 5, size: int = 2048) -> tuple[float, float]:
    """Seconds per size^3 float32 matmul and per RS encoder batch, best of `rounds` turns of each.

    A turn of matmuls lasts about as long as one encoder batch and the two alternate, so load from other processes
    on a shared machine hits both alike (a lone short matmul catches quiet moments more often).
    """
    import torch

    cfg = model.config
    a, b = torch.randn(size, size), torch.randn(size, size)
    x = np.random.default_rng(0).random((batch, cfg.rs_channels, cfg.rs_input_size, cfg.rs_input_size),
                                        dtype=np.float32)
    t_enc = best_time(lambda: model.rs_tokens(x), 1)
    reps = max(1, round(t_enc / best_time(lambda: torch.matmul(a, b), 2)))
    t_mm, t_enc = [], [t_enc]
    for _ in range(rounds):
        t_mm.append(best_time(lambda: [torch.matmul(a, b) for _ in range(reps)], 0) / reps)
        t_enc.append(best_time(lambda: model.rs_tokens(x), 0))
    return min(t_mm), min(t_enc)


def measure_encoders(args, tmp: Path) -> tuple[list, float, float, float]:
    """Table rows, encoder/sgemm and torch/onnxruntime time ratios, encoder crops/s; saves the model's bundle in tmp
    for the runs."""
    import torch

    import engine
    from engine.model.onnx_export import export_onnx

    torch.manual_seed(0)
    model = engine.GAIRModel(engine.GAIRConfig()).eval()
    flops = encoder_flops(model.config)
    t_mm, t_torch = matmul_and_encoder(model, args.batch)
    sgemm, enc = 2 * 2048**3 / t_mm / 1e9, flops * args.batch / t_torch / 1e9
    args.bundle = engine.save_bundle(model, tmp / "bundle")
    onnx = engine.load_model(export_onnx(args.bundle, tmp / "onnx", check=False), backend="onnx", device="cpu")
    x = np.random.default_rng(0).random((args.batch, 10, 96, 96), dtype=np.float32)
    onnx.rs_tokens(x)  # session start-up
    t_onnx, t_torch_again = [], []
    for _ in range(3):  # alternate the backends, as for the matmul above
        t_onnx.append(best_time(lambda: onnx.rs_tokens(x), 0))
        t_torch_again.append(best_time(lambda: model.rs_tokens(x), 0))
    t_onnx, speedup = min(t_onnx), min(t_torch_again) / min(t_onnx)
    rows = [("float32 matmul 2048^3 (torch)", f"{sgemm:.1f} GFLOP/s"),
            ("RS encoder FLOPs per crop", f"{flops / 1e9:.2f} GFLOP"),
            (f"RS encoder torch (batch {args.batch})", f"{args.batch / t_torch:.2f} crops/s, {enc:.1f} GFLOP/s"),
            ("encoder / sgemm", f"{enc / sgemm:.2f}"),
            (f"RS encoder onnxruntime (batch {args.batch})",
             f"{args.batch / t_onnx:.2f} crops/s, {flops * args.batch / t_onnx / 1e9:.1f} GFLOP/s"),
            ("onnxruntime speed-up over torch", f"{speedup:.2f}x")]
    return rows, enc / sgemm, speedup, args.batch / t_torch


def golden_model():
    """The official-size model with the golden test's deterministic weights (tests/golden.py)."""
    import torch

    import engine
    from engine.model.checkpoint import apply_state_dict
    from tests.golden import golden_state_dict

    model = engine.GAIRModel(engine.GAIRConfig())
    apply_state_dict(model, {k: torch.from_numpy(v) for k, v in golden_state_dict().items()}, "golden")
    return model.eval()


def seam_and_sweep(args, tmp: Path) -> tuple[list, float]:
    """Rows of the overlap sweep (with --overlap-sweep) and the seam figure at the default overlap (Detroit).

    The sweep runs on a 640 px synthetic scene (the real samples take 2 x 2 crops whatever the overlap): seam figure
    and cosine to a 0.75-overlap field per overlap, with the encodes per pixel a whole tile (10980 px) takes.
    """
    import rasterio

    from engine.pipeline import embed_raster
    from engine.pipeline.quality import seam_figure
    from engine.pipeline.tiling import TokenLattice

    model = golden_model()
    cfg = model.config

    def embed(path: Path, overlap: float | None) -> np.ndarray:
        kwargs = {} if overlap is None else {"overlap": overlap}
        out = embed_raster(path, tmp / f"{path.stem}_field.tif", model, dims=0, dtype="float32", quicklook=False,
                           **kwargs)
        with rasterio.open(out) as ds:
            return ds.read()

    seam = seam_figure(embed(ROOT / "data" / "samples" / "detroit_rs.tif", None))
    rows = []
    if args.overlap_sweep:
        for city in ("tokyo", "sacramento"):
            rows.append((f"seam figure, {city} sample, official-size weights",
                         f"{seam_figure(embed(ROOT / 'data' / 'samples' / f'{city}_rs.tif', None)):.2f}"))
        scene = tmp / "sweep_640.tif"
        write_raster(scene, 640, seed=1)
        reference = embed(scene, 0.75)
        for overlap in (0.0, 1 / 12, 0.25, 0.5):
            field = embed(scene, overlap)
            cosine = np.mean(np.sum(field * reference, 0) / np.linalg.norm(field, axis=0)
                             / np.linalg.norm(reference, axis=0))
            tile = TokenLattice.for_scene(10980, 10980, 224, 224, cfg.rs_grid, overlap, 2.0)
            rows.append((f"overlap {overlap:.3f}, 640 px scene ({len(tile) * 224**2 / 10980**2:.2f} encodes/px on a "
                         "whole tile)", f"seam figure {seam_figure(field):.2f}, cosine to overlap 0.75 {cosine:.5f}"))
    rows.append(("seam figure, Detroit sample, official-size weights", f"{seam:.2f}"))
    return rows, seam


def measure_int8(args, tmp: Path) -> tuple[list, dict]:
    """The int8 CPU path (backend onnx-int8) against float32 onnxruntime on the export measure_encoders wrote:
    encoder speed-up, and the per-pixel cosine of their embeddings (all dims, float32) on the real samples."""
    import rasterio

    import engine
    from engine.model.onnx_export import quantize_int8
    from engine.pipeline import embed_raster

    quantize_int8(tmp / "onnx")
    fp32 = engine.load_model(tmp / "onnx", backend="onnx", device="cpu")
    int8 = engine.load_model(tmp / "onnx", backend="onnx-int8", device="cpu")
    x = np.random.default_rng(0).random((args.batch, 10, 96, 96), dtype=np.float32)
    int8.rs_tokens(x)  # session start-up
    t_fp32, t_int8 = [], []
    for _ in range(3):  # alternate, as the other comparisons
        t_fp32.append(best_time(lambda: fp32.rs_tokens(x), 0))
        t_int8.append(best_time(lambda: int8.rs_tokens(x), 0))
    speedup = min(t_fp32) / min(t_int8)
    cosines, centred = [], []
    for sample in sorted((ROOT / "data" / "samples").glob("*_rs.tif")):
        fields = []
        for label, model in (("fp32", fp32), ("int8", int8)):
            out = embed_raster(sample, tmp / f"{sample.stem}_{label}.tif", model, dims=0, dtype="float32",
                               quicklook=False)
            with rasterio.open(out) as ds:
                fields.append(ds.read().reshape(ds.count, -1).astype(np.float64))
        a, b = fields
        valid = np.isfinite(a).all(axis=0) & np.isfinite(b).all(axis=0)
        a, b = a[:, valid], b[:, valid]
        cosines.append((a * b).sum(0) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)))
        mean = a.mean(axis=1, keepdims=True)  # what varies between pixels: the part analyses use
        a, b = a - mean, b - mean
        centred.append((a * b).sum(0) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)))
    cosine, centred = np.concatenate(cosines), np.concatenate(centred)
    rows = [(f"RS encoder onnxruntime int8 (batch {args.batch})",
             f"{args.batch / min(t_int8):.2f} crops/s, {speedup:.2f}x float32 onnxruntime"),
            ("int8 vs float32 embeddings, real samples (cosine per pixel)",
             f"mean {cosine.mean():.5f}, worst {cosine.min():.5f} ({cosine.size} px)"),
            ("  the same less the samples' mean embedding",
             f"mean {centred.mean():.5f}, worst {centred.min():.5f}")]
    return rows, {"int8_vs_fp32": speedup, "int8_cosine": float(cosine.mean()),
                  "int8_cosine_min": float(cosine.min()), "int8_cosine_centred": float(centred.mean())}


def write_raster(path: Path, side: int, seed: int = 0) -> None:
    """Smooth random 12-band L2A-like uint16 raster at 10 m (UTM), band descriptions set."""
    import rasterio
    from rasterio.transform import from_origin

    from engine.config import S2_MEAN, S2_STD
    from engine.pipeline.bands import L2A_12

    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((3, side // 16 + 2, side // 16 + 2)).astype(np.float32)
    base = np.kron(coarse, np.ones((16, 16), np.float32))[:, :side, :side]
    base += 0.3 * rng.standard_normal(base.shape).astype(np.float32)
    picks = [1, 2, 3, 4, 5, 6, 7, 8, 10, 11]
    mean = np.interp(np.arange(12), picks, S2_MEAN)[:, None, None].astype(np.float32)
    std = np.interp(np.arange(12), picks, S2_STD)[:, None, None].astype(np.float32)
    mix = rng.standard_normal((12, 3)).astype(np.float32) / np.sqrt(3)
    profile = dict(driver="GTiff", width=side, height=side, count=12, dtype="uint16", crs="EPSG:32633", nodata=0,
                   transform=from_origin(500000, 4500000, 10, 10), tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate")
    with rasterio.open(path, "w", **profile) as ds:
        for i, name in enumerate(L2A_12):
            band = mean[i] + 0.8 * std[i] * np.tensordot(mix[i], base, axes=1)
            ds.write(np.clip(band, 1, 10000).astype(np.uint16), i + 1)
            ds.set_band_description(i + 1, name)


def child(args) -> None:
    """One embed_raster run in this fresh process; prints JSON with the run's time, the start-up before it, the crops
    it encoded and its peak RSS.

    The timer covers the pipeline only: what every fresh process pays once (imports, loading the model, its
    fingerprint, importing scikit-learn's PCA) is measured apart, so km2/min is a rate that holds for large rasters.
    """
    import rasterio
    import torch

    import engine
    from engine.pipeline import embed_raster

    torch.set_num_threads(args.threads)
    startup = {"interpreter and imports": process_age()}
    t = time.perf_counter()
    model = engine.load_model(args.bundle, device="cpu")
    startup["model load"] = time.perf_counter() - t
    t = time.perf_counter()
    model.fingerprint  # noqa: B018 - cached on the model: the pipeline asks for it
    startup["fingerprint"] = time.perf_counter() - t
    t = time.perf_counter()
    import sklearn.decomposition  # noqa: F401 - the PCA fit's first import

    startup["scikit-learn"] = time.perf_counter() - t
    crops = count_crops(model)
    t = time.perf_counter()
    embed_raster(args.raster, args.out, model, dims=args.dims, batch_size=args.batch, quicklook=False)
    seconds = time.perf_counter() - t
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    with rasterio.open(args.raster) as ds:
        width_m, height_m = ds.width * ds.res[0], ds.height * ds.res[1]
    crop_m = model.config.crop_ground_m
    print(json.dumps({"seconds": seconds, "rss_mb": hwm / 1024, "startup": startup, "crops": crops[0],
                      "encodes_per_px": crops[0] * crop_m * crop_m / (width_m * height_m)}))


def process_age() -> float:
    """Seconds since this process started (Linux /proc, 10 ms resolution)."""
    with open("/proc/self/stat") as stat:
        start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
    with open("/proc/uptime") as uptime:
        return float(uptime.read().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")


def count_crops(model) -> list[int]:
    """Count the crops `model.rs_tokens` encodes from now on (in the returned one-element list)."""
    count, encode = [0], model.rs_tokens

    def counted(x, *args, **kwargs):
        count[0] += len(x)
        return encode(x, *args, **kwargs)

    model.rs_tokens = counted
    return count


def run_child(args, raster: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", "--bundle", str(args.bundle), "--raster", str(raster),
           "--out", str(out), "--dims", str(args.dims), "--batch", str(args.batch), "--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"child failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=2048,
                        help="side of the 4x raster in 10 m pixels (the 1x run has half of it)")
    parser.add_argument("--dims", type=int, default=32, help="output dims (PCA) of the end-to-end runs")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--overlap-sweep", action="store_true", help="also measure overlap vs seams and agreement")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--raster", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="gair-bench-") as tmp:
        tmp = Path(tmp)
        rows, encoder_ratio, onnx_speedup, crops_per_s = measure_encoders(args, tmp)
        int8_rows, int8_figures = measure_int8(args, tmp)
        rows += int8_rows
        runs = {}
        for label, side in (("1x", args.side // 2), ("4x", args.side)):
            raster = tmp / f"s2_{side}.tif"
            write_raster(raster, side)
            runs[label] = run_child(args, raster, tmp / f"out_{side}.tif")
            km2 = (side * 10 / 1000) ** 2
            runs[label]["km2"] = km2
            rows.append((f"embed_raster {side}x{side} px ({km2:.1f} km2, dims {args.dims})",
                         f"{runs[label]['seconds']:.1f} s, {km2 / runs[label]['seconds'] * 60:.2f} km2/min, "
                         f"peak RSS {runs[label]['rss_mb']:.0f} MB, {runs[label]['crops']} crops "
                         f"({runs[label]['encodes_per_px']:.2f} encodes/px)"))
        startup = runs["4x"]["startup"]
        rows.append(("start-up of a fresh process (not in km2/min)",
                     f"{sum(startup.values()):.1f} s: " + ", ".join(f"{k} {v:.2f} s" for k, v in startup.items())))
        rows.append(("encodes per pixel, 4x run (crops x crop area / raster area)",
                     f"{runs['4x']['encodes_per_px']:.3f}"))
        sweep_rows, seam = seam_and_sweep(args, tmp)
    km2_per_min = runs["4x"]["km2"] / runs["4x"]["seconds"] * 60
    rss_ratio = runs["4x"]["rss_mb"] / runs["1x"]["rss_mb"]
    rows.append(("peak RSS 4x / 1x", f"{rss_ratio:.3f}"))
    import engine

    crop_km2 = (engine.GAIRConfig().crop_ground_m / 1000) ** 2
    bound = crops_per_s * crop_km2 * 60
    rows.append(("encoder-bound rate (no overlap)", f"{bound:.2f} km2/min"))
    rows += sweep_rows

    width = max(len(name) for name, _ in rows)
    print(f"threads {args.threads}, torch {torch.__version__}, batch {args.batch}")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")
    print(f"RESULT km2_per_min={km2_per_min:.3f} encoder_vs_sgemm={encoder_ratio:.3f} "
          f"onnx_vs_torch={onnx_speedup:.3f} rss_4x_vs_1x={rss_ratio:.3f} "
          f"area_vs_encoder_bound={km2_per_min / bound:.3f} encodes_per_px={runs['4x']['encodes_per_px']:.3f} "
          f"seam_figure={seam:.2f} "
          + " ".join(f"{key}={value:.4f}" for key, value in int8_figures.items()))


if __name__ == "__main__":
    main()
