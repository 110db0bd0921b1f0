"""`make demo`: GAIR end to end on the three real Sentinel-2 samples (Detroit, Sacramento, Tokyo).

Weights: the official checkpoint when one is at hand (--checkpoint, $GAIR_CHECKPOINT, or the authors' hub when
huggingface_hub and the network are there); otherwise the tiny config is pretrained here, on the synthetic world,
for a few minutes, and its land-cover probe is printed before and after. Then, for each real sample: embed the
raster into a continuous field, cluster it, search it for places like the photo point, and match photos to crops
across modalities. Outputs go to demo_out/. The script says which weights it used.
"""
from __future__ import annotations

import argparse
import csv
import os
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EXAMPLES = ROOT / "data" / "samples"


def official_weights(checkpoint: str | None, use_hub: bool):
    """(model, description) from the official checkpoint, or (None, why not)."""
    import engine
    from engine.errors import GAIRError

    path = checkpoint or os.environ.get("GAIR_CHECKPOINT")
    if path:
        kind = "the official GAIR checkpoint" if Path(path).suffix == ".pth" else "the GAIR bundle"
        return engine.load_model(path, device="auto"), f"{kind} at {path}"
    if not use_hub:
        return None, "no checkpoint given (--checkpoint or GAIR_CHECKPOINT) and the hub was not asked (--no-hub)"
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        return None, "no checkpoint given (--checkpoint or GAIR_CHECKPOINT) and huggingface_hub is not installed"
    try:  # a quick reachability check spares the hub client's retries when offline
        socket.create_connection(("huggingface.co", 443), timeout=5).close()
    except OSError as exc:
        return None, f"no checkpoint given (--checkpoint or GAIR_CHECKPOINT) and the hub is unreachable ({exc})"
    try:
        return engine.load_model(None, device="auto"), "official GAIR weights from the authors' hub"
    except GAIRError as exc:
        return None, f"the hub could not be reached ({str(exc).split('.')[0]})"


def pretrain_tiny(out: Path, steps: int):
    import engine
    from engine.pretrain.probe import synthetic_benchmark

    print(f"\n== pretraining the tiny config on the synthetic world ({steps} steps; CPU, a few minutes)")
    bench = synthetic_benchmark(out, ROOT / "configs" / "tiny.toml",
                                [f"train.max_steps={steps}", "train.checkpoint_every=1000", "train.tensorboard=false"])
    print(f"pretrained in {bench.train_seconds:.0f} s -> {bench.bundle}")
    print(f"land cover from the localized embedding at {bench.n_points} held-out points (linear probe):")
    for mode, name in (("nili", "NILI at the point"), ("mean", "crop mean")):
        print(f"  {name:18s} random init {bench.random[mode]:.1%}   pretrained {bench.pretrained[mode]:.1%}")
    return engine.load_model(bench.bundle, device="auto")


def read_examples() -> list[dict]:
    with open(EXAMPLES / "examples.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def analyse(model, examples: list[dict], out: Path) -> None:
    from engine.analysis.cluster import cluster_embeddings
    from engine.analysis.similarity import similarity_search
    from engine.pipeline.raster import embed_raster

    for ex in examples:
        name, raster = ex["id"], EXAMPLES / ex["rs_image"]
        t0 = time.perf_counter()
        field = embed_raster(raster, out / f"{name}_embedding.tif", model)
        clusters = cluster_embeddings(field, out / f"{name}_clusters.tif", k=4)
        found = similarity_search(field, out / f"{name}_similarity.tif", points=[(float(ex["lon"]), float(ex["lat"]))],
                                  points_crs="EPSG:4326", top_k=3)
        shares = ", ".join(f"{c / max(sum(clusters.counts), 1):.0%}" for c in clusters.counts)
        hits = "; ".join(f"({h.x:.5f}, {h.y:.5f}) cos {h.score:.3f}" for h in found.hits)
        print(f"{name:10s} field {field.name} ({time.perf_counter() - t0:.1f} s); 4 clusters: {shares}")
        print(f"{'':10s} most like the photo point: {hits}")


def cross_modal(model, examples: list[dict]) -> None:
    """Cosine between each crop's embedding at its photo point and each photo's aligned embedding."""
    import numpy as np
    import rasterio

    from engine.runtime.preprocess import load_photo, preprocess_rs, preprocess_sv

    rs, sv, lonlat, bbox = [], [], [], []
    for ex in examples:
        with rasterio.open(EXAMPLES / ex["rs_image"]) as ds:
            rs.append(preprocess_rs(ds.read(), model.config)[0])
        sv.append(preprocess_sv(load_photo(EXAMPLES / ex["sv_image"]), model.config)[0])
        lonlat.append([float(ex["lon"]), float(ex["lat"])])
        corners = ("rs_bbox_lon_min", "rs_bbox_lat_max", "rs_bbox_lon_max", "rs_bbox_lat_min")
        bbox.append([float(ex[k]) for k in corners])
    r = model.query_localized(np.stack(rs), np.array(lonlat), np.array(bbox))
    s = model.encode_sv(np.stack(sv), aligned=True)
    r, s = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (r, s))
    sims = r @ s.T
    names = [ex["id"] for ex in examples]
    print("cosine(crop at the photo point, photo):  " + "  ".join(f"{n:>10s}" for n in names))
    for name, row in zip(names, sims):
        best = names[int(row.argmax())]
        print(f"  {name:10s}" + " " * 29 + "  ".join(f"{v:10.3f}" for v in row) + f"   best photo: {best}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "demo_out"))
    parser.add_argument("--checkpoint", help="official checkpoint.pth or bundle folder (default: $GAIR_CHECKPOINT)")
    parser.add_argument("--no-hub", action="store_true", help="do not try the authors' hub")
    parser.add_argument("--steps", type=int, default=600, help="pretraining steps when no official weights are at hand")
    args = parser.parse_args(argv)
    from engine.errors import GAIRError

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (EXAMPLES / "examples.csv").is_file():
        print(f"error: the real samples are missing: {EXAMPLES} (data/samples in the repository)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        model, which = official_weights(args.checkpoint, not args.no_hub)
        if model is None:
            print(f"No official GAIR checkpoint: {which}.")
            model = pretrain_tiny(out / "pretrain", args.steps)
            which = ("the tiny model pretrained just now on the synthetic world (not the official weights; "
                     "set GAIR_CHECKPOINT=/path/checkpoint.pth to use them)")
        print(f"\n== weights: {which}; model {model.fingerprint}, {model.config.embed_dim}-d")
        examples = read_examples()
        print(f"\n== embedding, clustering and searching {len(examples)} real Sentinel-2 samples -> {out}")
        analyse(model, examples, out)
        print("\n== photos vs crops across modalities")
        cross_modal(model, examples)
    except GAIRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\ndone in {time.perf_counter() - started:.0f} s with {which}; outputs in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
