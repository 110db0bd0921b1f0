"""Analysis commands: cluster-embeddings, similarity-search, search-by-photo, search-by-location, change,
train-classifier, train-regressor, apply-model and rank-features (options from engine.params; handlers print what
the engine wrote)."""
from __future__ import annotations

import argparse

from .options import add_operation, run


def _cluster(args: argparse.Namespace) -> int:
    result = run(args)
    if result.silhouettes:
        print("silhouette by k: " + ", ".join(f"{k}: {s:.3f}" for k, s in result.silhouettes.items()))
    print(f"wrote {result.path} (k={result.k}, pixels per class {result.counts}) in {result.seconds:.1f}s")
    if result.polygons_path:
        print(f"wrote {result.polygons} polygons to {result.polygons_path}")
    return 0


# similarity-search also takes a photo or a location (the same as search-by-photo / search-by-location)
# operation -> (the options that ask for it, further options)
CROSS_MODAL = {"search_by_photo": (("photos", "photo_layer"), ("photo_field",)),
               "search_by_location": (("locations", "location_layer"), ("locations_crs",))}


def _add_cross_modal_options(parser: argparse.ArgumentParser) -> None:
    from ..params import operation
    from .options import LOADING, add_argument

    group = parser.add_argument_group("search by street-view photo or by location (as search-by-photo and "
                                      "search-by-location; need the model that made the raster)")
    for op_id, (asking, further) in CROSS_MODAL.items():
        for name in asking + further:
            add_argument(group, operation(op_id).param(name))
    for name in LOADING:
        add_argument(group, operation("search_by_photo").param(name))


def _similarity(args: argparse.Namespace) -> int:
    asked = [op_id for op_id, (asking, _) in CROSS_MODAL.items() if any(getattr(args, n) for n in asking)]
    if not asked:
        return _print_similarity(args, run(args))
    if len(asked) > 1 or args.points or args.reference_layer:
        from ..errors import GAIRError

        raise GAIRError("give one kind of reference: points or a reference layer, a photo, or a location")
    args.operation = asked[0]
    return _modal_search(args)


def _modal_search(args: argparse.Namespace) -> int:
    from .options import load_model

    return _print_similarity(args, run(args, model=load_model(args)))


def _print_hits(result) -> None:
    """The top places of a search, and where their layer went."""
    for hit in result.hits:
        print(f"  #{hit.rank:<3d} score {hit.score:.4f}  x {hit.x:.6f}  y {hit.y:.6f}  (row {hit.row}, col {hit.col})")
    if result.hits_path:
        print(f"wrote {result.hits_path}")


def _print_similarity(args: argparse.Namespace, result) -> int:
    print(f"wrote {result.path} ({result.valid_pixels} pixels, {result.references} reference(s)) "
          f"in {result.seconds:.1f}s")
    _print_hits(result)
    if result.mask_path:
        print(f"wrote {result.mask_path} ({result.mask_pixels} pixels >= {args.threshold})")
    return 0


def _change(args: argparse.Namespace) -> int:
    result = run(args)
    how = (f"Otsu's threshold, separation {result.separation:.2f}" if result.threshold_method == "otsu"
           else "given threshold")
    share = result.changed_pixels / max(result.valid_pixels, 1)
    print(f"wrote {result.path} ({result.width} x {result.height} px overlap) in {result.seconds:.1f}s; "
          f"changed: {result.changed_pixels} of {result.valid_pixels} pixels ({share:.1%}) at cosine distance > "
          f"{result.threshold:.4f} ({how})")
    for area in result.areas[:args.show]:
        print(f"  #{area.rank:<3d} mean change {area.mean_change:.4f}  max {area.max_change:.4f}  "
              f"{area.pixels} px ({area.area_m2 / 1e4:.2f} ha)  x {area.x:.6f}  y {area.y:.6f}")
    for path in (result.mask_path, result.polygons_path):
        if path:
            print(f"wrote {path}")
    return 0


def _print_applied(applied) -> None:
    print(f"wrote {applied.path}" + (f" and {applied.confidence_path}" if applied.confidence_path else "")
          + f" in {applied.seconds:.1f}s; pixels: {applied.counts}")


def _train(args: argparse.Namespace) -> int:
    from ..analysis.report import format_text

    result = run(args)
    print(format_text(result.report), end="")
    skipped = {"outside the raster": result.skipped_outside, "on nodata": result.skipped_nodata,
               "without a value": result.skipped_unlabelled}
    if any(skipped.values()):
        print("skipped features: " + ", ".join(f"{n} {why}" for why, n in skipped.items() if n))
    print(f"wrote {result.model_path}" + "".join(f", {p}" for p in result.report_paths))
    if result.applied is not None:
        _print_applied(result.applied)
    return 0


def _apply(args: argparse.Namespace) -> int:
    _print_applied(run(args))
    return 0


def _rank(args: argparse.Namespace) -> int:
    result = run(args)
    print(f"wrote {result.path} ({len(result.ranking)} features ranked against {result.references} reference(s))")
    for rank, (fid, score) in enumerate(result.ranking[:args.show], start=1):
        print(f"  #{rank:<3d} fid {fid}  score {score:.4f}")
    return 0


def _classify_location(args: argparse.Namespace) -> int:
    from .options import load_model

    result = run(args, model=load_model(args))
    print(result.summary())
    print("pixels per class: " + ", ".join(f"{name}: {count}" for name, count in result.counts.items()))
    return 0


def _fewshot(args: argparse.Namespace) -> int:
    result = run(args)
    grid = "full resolution" if result.factor == 1 else f"every {result.factor}th pixel"
    print(f"wrote {result.path} ({result.width} x {result.height} px, {grid}; {result.positives} positive, "
          f"{result.negatives} negative example(s); {result.method}) in {result.seconds:.2f}s")
    _print_hits(result)
    return 0


def register(subparsers) -> None:
    add_operation(subparsers, "cluster_embeddings", _cluster)
    _add_cross_modal_options(add_operation(subparsers, "similarity_search", _similarity))
    add_operation(subparsers, "search_by_photo", _modal_search)
    add_operation(subparsers, "search_by_location", _modal_search)
    add_operation(subparsers, "change", _change).add_argument(
        "--show", type=int, default=10, help="print the top N changed areas (default: 10)")
    add_operation(subparsers, "train_classifier", _train)
    add_operation(subparsers, "train_regressor", _train)
    add_operation(subparsers, "apply_model", _apply)
    add_operation(subparsers, "classify_location", _classify_location)
    parser = add_operation(subparsers, "rank_features", _rank)
    parser.add_argument("--show", type=int, default=10, help="print the best N (default: 10)")
    add_operation(subparsers, "fewshot_search", _fewshot)
