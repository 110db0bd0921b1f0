"""CLI: pretrain, build-dataset, synthetic (registered by engine/cli/main.py, which reports errors and Ctrl-C).

`python -m engine.pretrain`, `python -m engine.pretrain.build_dataset` and `python -m engine.pretrain.synthetic`
are aliases that run these same commands.

    python -m engine synthetic world/                                  # a procedural world for trying things out
    python -m engine build-dataset --config configs/tiny.toml --rasters world/sentinel2.tif \\
        --photos world/photos.csv --out world/manifest.csv
    python -m engine pretrain --config configs/tiny.toml --manifest world/manifest.csv --out runs/tiny
    torchrun --nproc_per_node 8 -m engine pretrain --config configs/base.toml --manifest m.csv --out runs/base
    python -m engine pretrain --config configs/tiny.toml --out runs/tiny --resume      # continue after a crash
    python -m engine pretrain --config configs/tiny.toml --set objective.query_mode=mean --set optim.lr=1e-3
"""
from __future__ import annotations

import json
import os
import sys

from .options import progress


def register(subparsers) -> None:
    p = subparsers.add_parser("pretrain", help="pretrain GAIR from a manifest (torchrun: one process per GPU)",
                              description="Pretrain GAIR from a manifest; under torchrun, one process per GPU (or "
                                          "CPU rank). The result is a model bundle in <out>/bundle.")
    p.add_argument("--config", help="TOML or YAML config (configs/tiny.toml, configs/base.toml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one option, e.g. optim.lr=1e-3 or objective.loc_negatives=\"batch+queue\"")
    p.add_argument("--manifest", help="= data.manifest")
    p.add_argument("--out", help="= train.out_dir")
    p.add_argument("--init", help="= init.source: random, a bundle folder, a checkpoint .pth, or hub")
    p.add_argument("--max-steps", type=int, help="= train.max_steps")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from CHECKPOINT, or from the newest one in the output folder (a fresh start when "
                        "there is none yet)")
    p.add_argument("--overwrite", action="store_true",
                   help="start a fresh run in an output folder that is not empty (its checkpoints are deleted)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar (= train.progress=false)")
    p.set_defaults(handler=_pretrain)

    p = subparsers.add_parser("build-dataset", help="pretraining manifest from Sentinel-2 rasters and geotagged photos",
                              description="One crop per photo, the photo point at a random place in it; rasters are "
                                          "read as embed-raster reads them (bands by identity, the same crop size).")
    p.add_argument("--rasters", nargs="+", required=True, help="Sentinel-2 rasters or folders of them")
    p.add_argument("--photos", required=True, help="photo table: CSV with lon/lat/path, or any vector layer")
    p.add_argument("--out", required=True, help="manifest to write (.csv, or .parquet with pyarrow)")
    p.add_argument("--config", help="pretraining config: its model's crop_pixels x gsd_m is the crop size")
    p.add_argument("--crop-ground-m", type=float, default=0.0, help="crop side on the ground, metres")
    p.add_argument("--bands", default=None, help="band mapping, as for embed-raster (then set data.bands the same)")
    p.add_argument("--crops-dir", help="also write each crop as its own GeoTIFF and point the manifest at it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tries", type=int, default=3, help="random offsets tried before a nodata crop is skipped")
    p.add_argument("--lon-field", default="lon")
    p.add_argument("--lat-field", default="lat")
    p.add_argument("--path-field", default="path", help="photo path column; '' for points without photos")
    p.add_argument("--date-field", default="date")
    p.add_argument("--label-field", default="label")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_build_dataset)

    from ..pretrain.synthetic import WorldSpec

    p = subparsers.add_parser("synthetic", help="a procedural world: Sentinel-2-like raster, photos, labels",
                              description="Write a procedural world (raster, land-cover truth, photos, label points) "
                                          "for trying pretraining and the analysis tools.")
    p.add_argument("out_dir")
    p.add_argument("--size", type=int, default=WorldSpec.size_px, help="raster side in 10 m pixels")
    p.add_argument("--photos", type=int, default=WorldSpec.n_photos)
    p.add_argument("--labels", type=int, default=WorldSpec.n_labels)
    p.add_argument("--crs", default="", help="raster CRS (default: UTM 32N, the truth grid)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_synthetic)


def run_alias(command: str, argv: list[str] | None) -> int:
    """`python -m engine.pretrain...`: the same command through the one CLI (same parsing, errors, exit codes)."""
    from .main import main

    return main([command, *(sys.argv[1:] if argv is None else argv)])


def _cancel_callback(args):
    """The CLI's Ctrl-C callback when it offers one (polled between steps), in a single process only: under
    torchrun, ranks must stop at the same step, so there Ctrl-C interrupts as usual."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return None
    cancel = getattr(args, "cancel", None)
    args.cancellable = cancel is not None
    return cancel


def _pretrain(args) -> int:
    from ..pretrain.config import load_config

    shortcuts = {"data.manifest": args.manifest, "train.out_dir": args.out, "init.source": args.init,
                 "train.max_steps": args.max_steps}
    overrides = [*args.overrides, *(["train.progress=false"] if args.quiet else [])]
    cfg = load_config(args.config, overrides, shortcuts)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    from ..pretrain.train import run

    result = run(cfg, resume=args.resume, cancel=_cancel_callback(args), overwrite=args.overwrite)
    if result.bundle is not None:
        print(f"done: {result.steps} steps, last loss {result.last_loss:.4f}, {result.samples_per_s:.1f} samples/s; "
              f"bundle {result.bundle}; log {result.log}")
    return 0


def _build_dataset(args) -> int:
    from ..config import GAIRConfig
    from ..io.vectors import read_point_table
    from ..pretrain.build_dataset import build_manifest, expand_rasters

    model_config = GAIRConfig()
    if args.config:
        from ..pretrain.config import load_config

        model_config = load_config(args.config).gair_config()
    points = read_point_table(args.photos, args.lon_field, args.lat_field, args.path_field, args.date_field,
                         args.label_field)
    with progress(args, "crops") as bar:
        report = build_manifest(expand_rasters(args.rasters), points, args.out,
                                args.crop_ground_m or model_config.crop_ground_m, args.seed, args.tries,
                                args.crops_dir, require_photos=bool(args.path_field), progress=bar,
                                cancel=_cancel_callback(args), bands=args.bands, model_config=model_config)
    print(report.summary())
    return 0


def _synthetic(args) -> int:
    from ..pretrain.synthetic import WorldSpec, make_world

    world = make_world(args.out_dir, WorldSpec(size_px=args.size, n_photos=args.photos, n_labels=args.labels,
                                               raster_crs=args.crs, seed=args.seed))
    print(f"raster {world.raster}\nphotos {world.photos_csv}\nlabels {world.labels_csv}")
    return 0
