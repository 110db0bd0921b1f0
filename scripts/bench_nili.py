"""Benchmark the dense NILI field against the per-point query and bilinear `grid_sample` (the floor).

One crop of the official architecture (12x12 tokens, 768-d, imnet 6914 -> 768), output grids of 96x96 and 384x384
pixels. The per-point query is the reference form (imnet on four 6914-vectors per pixel), batched over all pixels
(its best case); at 384x384 it runs on a sample of pixels and is scaled linearly (its cost is linear in pixels).
Prints a table and `RESULT dense_vs_point=<speedup at 96x96> dense_vs_bilinear=<worst time ratio>`.
"""
from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.model.query import nili_grid, nili_points, sample_dense  # noqa: E402
from engine.runtime.grid import dense_plan, pixel_centres  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Best of `repeats` after a warm-up: the least disturbed run on a shared machine."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def per_point(tokens: torch.Tensor, chunks: list[torch.Tensor], imnet: torch.nn.Linear) -> None:
    """The reference form at every sampled pixel, in chunks of 2048 points."""
    for chunk in chunks:
        nili_points(tokens, chunk, imnet)


def dense(tokens: torch.Tensor, size: int, imnet: torch.nn.Linear) -> torch.Tensor:
    """What GAIRModel.dense_field runs: the taps of the pixel centres, the projected cells, the kernel."""
    plan = dense_plan(size, size, int(tokens.shape[1] ** 0.5), "nili", like=tokens)
    return sample_dense(nili_grid(tokens, imnet.weight, imnet.bias, "released"), plan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--point-sample", type=int, default=4096, help="pixels timed for the per-point query at 384")
    args = parser.parse_args()
    torch.manual_seed(0)
    d, g = 768, 12
    imnet = torch.nn.Linear(9 * d + 2, d)
    tokens = torch.randn(1, g * g, d)
    rows = []
    with torch.inference_mode():
        for size in (96, 384):
            xy = np.stack(np.meshgrid(pixel_centres(size), pixel_centres(size)), -1).reshape(1, -1, 2)
            n = xy.shape[1]
            sample = xy[:, np.random.default_rng(0).choice(n, min(n, args.point_sample), replace=False)]
            chunks = [torch.from_numpy(c) for c in np.array_split(sample, max(1, sample.shape[1] // 2048), axis=1)]
            grid = torch.from_numpy(2 * xy.reshape(1, size, size, 2) - 1).float()
            feat = tokens.transpose(1, 2).reshape(1, d, g, g)
            t_point = timed(partial(per_point, tokens, chunks, imnet), 1 if size > 96 else 2) * n / sample.shape[1]
            t_dense = timed(partial(dense, tokens, size, imnet), args.repeats)
            t_bilinear = timed(partial(F.grid_sample, feat, grid, mode="bilinear", align_corners=False), args.repeats)
            rows.append((size, t_point, t_dense, t_bilinear))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, one crop, D={d}, grid {g}x{g}")
    header = ("output", 9), ("per-point s", 12), ("dense s", 9), ("bilinear s", 11), ("dense vs point", 15), \
        ("dense/bilinear", 15)
    print(" ".join(f"{name:>{width}}" for name, width in header))
    for size, tp, td, tb in rows:
        print(f"{size:>4}x{size:<4} {tp:>12.3f} {td:>9.4f} {tb:>11.4f} {tp / td:>14.0f}x {td / tb:>15.2f}")
    print(f"(per-point at 384x384 timed on {args.point_sample} pixels and scaled)")
    speedup = rows[0][1] / rows[0][2]
    ratio = max(td / tb for _, _, td, tb in rows)
    print(f"RESULT dense_vs_point={speedup:.0f} dense_vs_bilinear={ratio:.2f}")


if __name__ == "__main__":
    main()
