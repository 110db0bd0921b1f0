"""CLI: embed-raster, embed-points, embed-photos, embed-locations (registered by engine/cli.py; handlers return
an exit code, GAIRError is reported by engine/cli.py).

    python -m engine embed-raster S2.tif field.tif --dims 32 --pixel-size 20
    torchrun --nproc-per-node 4 -m engine embed-raster S2.tif field.tif     # crops sharded over 4 ranks
    python -m engine embed-points S2.tif parcels.gpkg parcels_gair.gpkg --space field.tif
    python -m engine embed-photos photos.gpkg photos_gair.gpkg --photo-field path
    python -m engine embed-locations sites.gpkg sites_gair.gpkg
"""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from typing import Iterator

from ..config import QUERY_MODES
from ..pipeline.raster import FIELD_MODES


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="checkpoint .pth, bundle folder or ONNX export (default: $GAIR_CHECKPOINT, else the hub)")
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=None, help="crops or photos per model call")


def _layer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layer-name", default=None, help="name of the output layer (default: the input layer's)")
    p.add_argument("--space", default=None,
                   help="embedding raster whose PCA the vectors go through, so they compare with its pixels")


def register(subparsers) -> None:
    p = subparsers.add_parser("embed-raster", help="Sentinel-2 raster -> continuous GAIR embedding raster",
                              description="Every output pixel is the NILI embedding of every crop covering it, "
                                          "blended seamlessly. Runs under torchrun to shard crops over ranks.")
    p.add_argument("input", help="Sentinel-2 L2A/L1C raster (10, 12 or 13 bands; any GDAL format and CRS)")
    p.add_argument("output", help="output GeoTIFF")
    p.add_argument("--bands", default=None,
                   help="band mapping when descriptions are missing/wrong: one raster band number per model band "
                        "(2,3,4,5,6,7,8,9,11,12) or one S2 name per raster band (B1,B2,...; - to ignore)")
    p.add_argument("--pixel-size", type=float, default=None, help="output pixel size in metres (default: input's)")
    p.add_argument("--dims", type=int, default=None, help="reduce to K principal components (sidecar .pca.npz)")
    p.add_argument("--dtype", choices=("float32", "int16"), default="float32")
    p.add_argument("--mode", choices=FIELD_MODES, default="nili", help="query mode for the field")
    p.add_argument("--overlap", type=float, default=0.5, help="fraction of a crop shared with its neighbour")
    p.add_argument("--min-valid", type=float, default=0.5, help="skip crops with less valid data than this")
    p.add_argument("--no-quicklook", action="store_true", help="do not write <output>.quicklook.png")
    _model_args(p)
    p.set_defaults(handler=_embed_raster)

    p = subparsers.add_parser("embed-points", help="GAIR embedding of a raster at each point/polygon of a layer")
    p.add_argument("raster", help="Sentinel-2 raster")
    p.add_argument("layer", help="vector layer (points, polygons; any CRS)")
    p.add_argument("output", help="output GeoPackage")
    p.add_argument("--bands", default=None, help="band mapping, as for embed-raster")
    p.add_argument("--polygons", choices=("mean", "centroid"), default="mean",
                   help="polygons: mean of the field over the pixels inside, or the embedding at the centroid")
    p.add_argument("--mode", choices=QUERY_MODES, default="nili")
    _layer_args(p)
    _model_args(p)
    p.set_defaults(handler=_embed_points)

    p = subparsers.add_parser("embed-photos", help="street-view embedding of the photo named by each feature")
    p.add_argument("layer", help="layer with a photo-path field (absolute or relative to the layer file)")
    p.add_argument("output", help="output GeoPackage")
    p.add_argument("--photo-field", default="photo", help="field holding the photo path (default: photo)")
    p.add_argument("--aligned", action="store_true", help="apply the projection trained against RS crops")
    _layer_args(p)
    _model_args(p)
    p.set_defaults(handler=_embed_photos)

    p = subparsers.add_parser("embed-locations", help="location embedding of each feature's lon/lat")
    p.add_argument("layer", help="vector layer (any CRS; centroids for non-points)")
    p.add_argument("output", help="output GeoPackage")
    _layer_args(p)
    _model_args(p)
    p.set_defaults(handler=_embed_locations)


@contextmanager
def _progress(label: str, enabled: bool = True) -> Iterator:
    """A progress callback (fractions 0..1) drawing a tqdm bar from its first call on (none on non-main ranks)."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bars = []

    def update(fraction: float) -> None:
        if not bars:
            bars.append(tqdm(total=1000, desc=label, unit="‰", file=sys.stderr, dynamic_ncols=True))
        bars[0].update(max(0, int(fraction * 1000) - bars[0].n))

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


def _load(args, device: str | None = None):
    from ..pipeline.raster import as_model

    return as_model(args.model, device=device or args.device, backend=args.backend)


def _embed_raster(args) -> int:
    from ..pipeline.distributed import init_from_env, shutdown
    from ..pipeline.raster import embed_raster

    shard = init_from_env()
    try:
        device = args.device
        if shard.world_size > 1 and shard.device.startswith("cuda") and device == "auto":
            device = shard.device
        model = _load(args, device)
        with _progress("embed-raster", shard.is_main) as bar:
            path = embed_raster(args.input, args.output, model, bands=args.bands, pixel_size_m=args.pixel_size,
                                dims=args.dims, dtype=args.dtype, mode=args.mode, overlap=args.overlap,
                                batch_size=args.batch_size, min_valid=args.min_valid,
                                quicklook=not args.no_quicklook, progress=bar)
        if shard.is_main:
            print(f"wrote {path}" + (f" ({shard.world_size} ranks)" if shard.world_size > 1 else ""))
    finally:
        shutdown(shard)
    return 0


def _embed_points(args) -> int:
    from ..pipeline.features import embed_features

    model = _load(args)
    with _progress("embed-points") as bar:
        result = embed_features(args.raster, args.layer, args.output, model, layer_name=args.layer_name,
                              bands=args.bands, polygons=args.polygons, space=args.space, mode=args.mode,
                              batch_size=args.batch_size, progress=bar)
    print(result.summary())
    return 0


def _embed_photos(args) -> int:
    from ..pipeline.features import embed_photos

    model = _load(args)
    with _progress("embed-photos") as bar:
        result = embed_photos(args.layer, args.output, model, photo_field=args.photo_field,
                              layer_name=args.layer_name, aligned=args.aligned, space=args.space,
                              batch_size=args.batch_size or 16, progress=bar)
    print(result.summary())
    return 0


def _embed_locations(args) -> int:
    from ..pipeline.features import embed_locations

    model = _load(args)
    with _progress("embed-locations") as bar:
        result = embed_locations(args.layer, args.output, model, layer_name=args.layer_name, space=args.space,
                                 batch_size=args.batch_size or 4096, progress=bar)
    print(result.summary())
    return 0
