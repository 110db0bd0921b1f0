"""CLI: `python -m engine evaluate` (registered by engine/cli/main.py; the handler returns an exit code).

    python -m engine evaluate --patches EuroSAT_MS/ --output eval/ --split random,blocks --block-size 5000
    python -m engine evaluate --raster S2.tif --points labels.gpkg --class-field class --output eval/
    python -m engine evaluate --location --points labels.csv --class-field label --output eval/
    python -m engine evaluate --location --synthetic-world world/ --output eval/
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator


def _floats(text: str) -> tuple[float, ...]:
    """'1,5,10,100' (percent) -> (0.01, 0.05, 0.1, 1.0)."""
    try:
        return tuple(float(t) / 100 for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected percentages separated by commas, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


@contextlib.contextmanager
def _progress_bar(enabled: bool) -> Iterator:
    """A tqdm bar driven by the engine's 0..1 progress callback (None when disabled)."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=100, desc="evaluate", leave=False, file=sys.stderr) as bar:
        yield lambda fraction: bar.update(max(0.0, round(fraction * 100, 1) - bar.n))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="linear probe + kNN of frozen embeddings: EuroSAT patches, labelled points, location",
        description="Frozen-encoder evaluation with learning curves, written as report.json and report.html. "
                    "Give --patches (EuroSAT-format folder: one sub-folder of 13-band GeoTIFFs per class), "
                    "--raster with --points (labelled points: NILI vs bilinear vs bicubic vs crop mean), or "
                    "--location with --points or --synthetic-world (CSP's few-label protocol, pretrained vs random).")
    p.add_argument("--output", required=True, help="folder for report.json and report.html")
    p.add_argument("--model", default=None,
                   help="checkpoint .pth, bundle folder or ONNX export (default: $GAIR_CHECKPOINT, else the hub)")
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    what = p.add_argument_group("what to evaluate")
    what.add_argument("--patches", default=None, help="EuroSAT-format folder (ROOT/<class>/<patch>.tif)")
    what.add_argument("--band-order", default=None,
                      help="band names of the patch files in order (default EuroSAT-MS: B01,...,B12,B8A)")
    what.add_argument("--raster", default=None, help="Sentinel-2 raster the labelled points lie on")
    what.add_argument("--points", default=None, help="labelled points: vector layer, or CSV with lon/lat (--location)")
    what.add_argument("--class-field", default=None, help="field with the class (default: class; label for --location)")
    what.add_argument("--bands", default=None, help="raster band mapping, as for embed-raster")
    what.add_argument("--modes", type=_names, default=None,
                      help="feature modes, comma-separated: nili, bilinear, bicubic, mean (crop mean). Default: "
                           "all four for points; mean,nili for patches (nili at the patch centre)")
    what.add_argument("--location", action="store_true", help="evaluate the location encoder (CSP protocol)")
    what.add_argument("--synthetic-world", default=None,
                      help="--location: make the synthetic world in this folder and use its label points")
    what.add_argument("--location-encoder", choices=("gair", "gridcell"), default="gair")
    what.add_argument("--gridcell", default=None,
                      help="CSP grid-cell encoder file or its folder (default: the --model folder)")
    what.add_argument("--method", choices=("probe", "finetune"), default="probe",
                      help="--location: frozen-encoder probe (default) or end-to-end fine-tuning as in CSP")
    what.add_argument("--epochs", type=int, default=100, help="--method finetune: full-batch epochs")
    proto = p.add_argument_group("protocol")
    proto.add_argument("--split", type=_names, default=("random",),
                       help="random (stratified folds), blocks (spatial blocks, GroupKFold) or random,blocks")
    proto.add_argument("--block-size", type=float, default=None, help="spatial block side in metres")
    proto.add_argument("--folds", type=int, default=5)
    proto.add_argument("--fractions", type=_floats, default=None,
                       help="training-label percentages (default 1,5,10,100; 5,10,20,50,100 for --location)")
    proto.add_argument("--repeats", type=int, default=5, help="seeded subsamples per fold below 100 %%")
    proto.add_argument("--knn-k", type=int, default=5)
    proto.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_evaluate)


def _evaluate(args) -> int:
    from ..errors import GAIRError
    from ..evaluate import ProtocolConfig, evaluate
    from ..evaluate.location import LOCATION_RATIOS, synthetic_world_points
    from ..evaluate.protocol import LEARNING_FRACTIONS

    points = args.points
    if args.synthetic_world and not args.location:
        raise GAIRError("--synthetic-world makes label points for the location protocol; add --location")
    if args.location and args.synthetic_world:
        if points is not None:
            raise GAIRError("give either --points or --synthetic-world, not both")
        points = synthetic_world_points(args.synthetic_world, seed=args.seed)
    fractions = args.fractions or (LOCATION_RATIOS if args.location else LEARNING_FRACTIONS)
    config = ProtocolConfig(splits=args.split, folds=args.folds, block_size=args.block_size, fractions=fractions,
                            repeats=args.repeats, knn_k=args.knn_k, seed=args.seed)
    model = args.model
    gridcell = args.gridcell
    if args.location and args.location_encoder == "gridcell" and gridcell is None and args.model:
        gridcell = args.model  # CSP pretraining saves the grid-cell encoder beside the bundle
    if not (args.location and args.location_encoder == "gridcell"):
        from ..runtime.loading import load_model

        model = load_model(args.model, device=args.device, backend=args.backend)
    options: dict = {"config": config}
    if args.location:
        options.update(class_field=args.class_field or "label", encoder=args.location_encoder, method=args.method,
                       gridcell=gridcell, epochs=args.epochs)
    elif args.patches is not None:
        options.update(band_order=args.band_order, **({"modes": args.modes} if args.modes else {}))
    else:
        options.update(class_field=args.class_field or "class", bands=args.bands,
                       **({"modes": args.modes} if args.modes else {}))
    with _progress_bar(not args.quiet) as progress:
        report = evaluate(args.output, model, patches=args.patches, raster=args.raster, points=points,
                          location=args.location, progress=progress, **options)
    _print_summary(report)
    return 0


def _print_summary(report: dict) -> None:
    print(f"{report['task']}: {report['n_samples']} samples, {len(report['classes'])} classes "
          f"(majority class {report['chance']:.3f})")
    for split, result in report["results"].items():
        for method, by_classifier in result["methods"].items():
            for classifier, curve in by_classifier.items():
                cells = "  ".join(f"{p['fraction'] * 100:g}%: {p['accuracy']:.3f}" for p in curve)
                print(f"  {split:7s} {method:14s} {classifier:8s} {cells}")
    for split, by_classifier in report.get("gain", {}).items():
        for classifier, curve in by_classifier.items():
            cells = "  ".join(f"{p['fraction'] * 100:g}%: {p['gain']:+.3f}" for p in curve)
            print(f"  gain {split:7s} {classifier:8s} {cells}")
    print(f"wrote {report['paths']['json']} and {report['paths']['html']}", file=sys.stdout)
