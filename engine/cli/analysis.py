"""CLI for the analysis functions: `python -m engine <cmd>` via register(), or `python -m engine.cli.analysis <cmd>`.

Each subcommand sets `handler(args) -> int` (what engine/cli.py calls); main() prints GAIRError as one line.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

from ..errors import GAIRError


@contextlib.contextmanager
def _progress_bar(description: str, enabled: bool = True) -> Iterator:
    """A tqdm bar driven by the engine's 0..1 progress callback (None when disabled)."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=100, desc=description, leave=False, file=sys.stderr,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}") as bar:
        def update(fraction: float) -> None:
            bar.update(max(0.0, round(fraction * 100, 1) - bar.n))

        yield update


def _cluster(args) -> int:
    from ..analysis.cluster import cluster_embeddings

    with _progress_bar("cluster", not args.quiet) as progress:
        result = cluster_embeddings(args.raster, args.output, k=args.k, k_range=tuple(args.k_range) if args.k_range
                                else None, sample_size=args.sample_size, seed=args.seed, polygons_path=args.polygons,
                                sieve_pixels=args.sieve, block_size=args.block_size, progress=progress)
    if result.silhouettes:
        print("silhouette by k: " + ", ".join(f"{k}: {s:.3f}" for k, s in result.silhouettes.items()))
    print(f"wrote {result.path} (k={result.k}, pixels per class {result.counts}) in {result.seconds:.1f}s")
    if result.polygons_path:
        print(f"wrote {result.polygons} polygons to {result.polygons_path}")
    return 0


def _similarity(args) -> int:
    from ..analysis.similarity import similarity_search

    with _progress_bar("similarity", not args.quiet) as progress:
        result = similarity_search(args.raster, args.output, points=args.point, points_crs=args.points_crs,
                                   reference_layer=args.reference_layer, layer=args.layer, aggregate=args.aggregate,
                                   top_k=args.top_k, min_distance_px=args.min_distance, threshold=args.threshold,
                                   mask_path=args.mask, hits_path=args.hits, block_size=args.block_size,
                                   progress=progress)
    print(f"wrote {result.path} ({result.valid_pixels} pixels, {result.references} reference(s)) "
          f"in {result.seconds:.1f}s")
    for hit in result.hits:
        print(f"  #{hit.rank:<3d} score {hit.score:.4f}  x {hit.x:.6f}  y {hit.y:.6f}  (row {hit.row}, col {hit.col})")
    if result.mask_path:
        print(f"wrote {result.mask_path} ({result.mask_pixels} pixels >= {args.threshold})")
    if result.hits_path:
        print(f"wrote {result.hits_path}")
    return 0


def _print_training(result) -> None:
    from ..analysis.report import format_text

    print(format_text(result.report), end="")
    skipped = {"outside the raster": result.skipped_outside, "on nodata": result.skipped_nodata,
               "without a value": result.skipped_unlabelled}
    if any(skipped.values()):
        print("skipped features: " + ", ".join(f"{n} {why}" for why, n in skipped.items() if n))
    print(f"wrote {result.model_path}" + "".join(f", {p}" for p in result.report_paths))
    if result.applied is not None:
        _print_applied(result.applied)


def _print_applied(applied) -> None:
    print(f"wrote {applied.path}" + (f" and {applied.confidence_path}" if applied.confidence_path else "")
          + f" in {applied.seconds:.1f}s; pixels: {applied.counts}")


def _classify(args) -> int:
    from ..analysis.classify import train_classifier

    with _progress_bar("classify", not args.quiet) as progress:
        result = train_classifier(args.raster, args.labels, args.field, args.model, method=args.method,
                                  folds=args.folds, seed=args.seed, layer=args.layer, report_paths=args.report,
                                  output_path=args.output, confidence_path=args.confidence,
                                  block_size=args.block_size, progress=progress)
    _print_training(result)
    return 0


def _apply(args) -> int:
    from ..analysis.classify import apply_model

    with _progress_bar("apply", not args.quiet) as progress:
        applied = apply_model(args.raster, args.model, args.output, confidence_path=args.confidence,
                                   block_size=args.block_size, progress=progress)
    _print_applied(applied)
    return 0


def _regress(args) -> int:
    from ..analysis.regress import train_regressor

    with _progress_bar("regress", not args.quiet) as progress:
        result = train_regressor(args.raster, args.labels, args.field, args.model, method=args.method,
                                 folds=args.folds, seed=args.seed, layer=args.layer, report_paths=args.report,
                                 output_path=args.output, block_size=args.block_size, progress=progress)
    _print_training(result)
    return 0


def _rank(args) -> int:
    from ..analysis.similarity import rank_features

    result = rank_features(args.layer_path, args.output, reference_fids=args.reference_fid,
                           reference_layer=args.reference_layer, aggregate=args.aggregate, layer=args.layer)
    print(f"wrote {result.path} ({len(result.ranking)} features ranked against {result.references} reference(s))")
    for rank, (fid, score) in enumerate(result.ranking[:args.show], start=1):
        print(f"  #{rank:<3d} fid {fid}  score {score:.4f}")
    return 0


def register(subparsers) -> None:
    """Add cluster, similarity, classify, apply-classifier, regress and rank-features subcommands."""
    from ..analysis.classify import CLASSIFIERS
    from ..analysis.regress import REGRESSORS

    def common(p, raster: bool = True, seed: bool = False) -> None:
        if raster:
            p.add_argument("raster", help="embedding raster (GeoTIFF written by embed-raster)")
            p.add_argument("--block-size", type=int, default=None, help="pixels per block side (tile multiple)")
        if seed:
            p.add_argument("--seed", type=int, default=0)
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = subparsers.add_parser("cluster", help="k-means classes of an embedding raster")
    common(p, seed=True)
    p.add_argument("output", help="class raster (Byte GeoTIFF, 0 = nodata)")
    p.add_argument("--k", type=int, default=8, help="number of clusters")
    p.add_argument("--k-range", type=int, nargs=2, metavar=("MIN", "MAX"), help="pick k by silhouette")
    p.add_argument("--sample-size", type=int, default=20000, help="pixels to fit on")
    p.add_argument("--polygons", help="also write class polygons to this GeoPackage")
    p.add_argument("--sieve", type=int, default=0, help="merge polygon pieces smaller than N pixels")
    p.set_defaults(handler=_cluster)

    p = subparsers.add_parser("similarity", help="cosine similarity to reference places, top-k look-alikes")
    common(p)
    p.add_argument("output", help="similarity raster (float32)")
    p.add_argument("--point", type=float, nargs=2, action="append", metavar=("X", "Y"), help="reference point")
    p.add_argument("--points-crs", default=None, help="CRS of --point (default: the raster's; EPSG:4326 = lon/lat)")
    p.add_argument("--reference-layer", help="vector layer of references (or a per-feature embedding layer)")
    p.add_argument("--layer", help="layer name inside --reference-layer")
    p.add_argument("--aggregate", choices=("mean", "max"), default="mean")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--min-distance", type=int, default=5, help="pixels between top-k hits")
    p.add_argument("--threshold", type=float, help="cosine similarity for --mask and hits")
    p.add_argument("--mask", help="Byte mask raster of pixels >= threshold")
    p.add_argument("--hits", help="GeoPackage of the top-k points")
    p.set_defaults(handler=_similarity)

    for name, methods, default, func, helptext in (
            ("classify", CLASSIFIERS, "logistic", _classify, "train (and apply) a classifier from labelled features"),
            ("regress", REGRESSORS, "random_forest", _regress, "train (and apply) a regressor on a numeric field")):
        p = subparsers.add_parser(name, help=helptext)
        common(p, seed=True)
        p.add_argument("labels", help="labelled points or polygons (GeoPackage, GeoJSON, shapefile)")
        p.add_argument("--field", required=True, help="class field" if name == "classify" else "numeric field")
        p.add_argument("--model", required=True, help="where to save the fitted model (.joblib)")
        p.add_argument("--method", choices=methods, default=default)
        p.add_argument("--folds", type=int, default=5)
        p.add_argument("--layer", help="layer name inside the labels file")
        p.add_argument("--report", action="append", default=[], help="report file: .json, .html or .txt")
        p.add_argument("--output", help="apply to the raster and write the class/prediction raster here")
        if name == "classify":
            p.add_argument("--confidence", help="with --output: confidence raster (top probability)")
        p.set_defaults(handler=func)

    p = subparsers.add_parser("apply-classifier", help="apply a saved classifier or regressor to a raster")
    common(p)
    p.add_argument("model", help="model file saved by classify/regress")
    p.add_argument("output", help="class (or prediction) raster")
    p.add_argument("--confidence", help="confidence raster (classifiers)")
    p.set_defaults(handler=_apply)

    p = subparsers.add_parser("rank-features", help="rank a per-feature embedding layer by similarity")
    common(p, raster=False)
    p.add_argument("layer_path", help="per-feature embedding layer (gair_000.. fields)")
    p.add_argument("output", help="ranked GeoPackage (adds similarity, sim_rank)")
    p.add_argument("--reference-fid", type=int, action="append", help="feature id of a reference (repeatable)")
    p.add_argument("--reference-layer", help="another embedding layer whose features are the references")
    p.add_argument("--aggregate", choices=("mean", "max"), default="mean")
    p.add_argument("--layer", help="layer name inside layer_path")
    p.add_argument("--show", type=int, default=10, help="print the best N")
    p.set_defaults(handler=_rank)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.cli.analysis", description=__doc__.splitlines()[0])
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except GAIRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
