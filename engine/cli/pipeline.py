"""Embedding commands: embed-raster, embed-features, embed-photos, embed-locations.

    python -m engine embed-raster S2.tif field.tif --dims 32 --pixel-size 20
    python -m engine embed-raster S2.tif part.tif --extent -83.3 42.45 -83.2 42.5 --extent-crs EPSG:4326
    torchrun --nproc-per-node 4 -m engine embed-raster S2.tif field.tif     # crops sharded over 4 ranks
    python -m engine embed-raster S2.tif other.tif --pca-from field.tif      # the same reduced space as field.tif
    torchrun --nproc-per-node 4 -m engine embed-rasters T*.tif out/          # inputs sharded: out/*.tif + mosaic.vrt
    python -m engine embed-features S2.tif parcels.gpkg parcels_gair.gpkg --space field.tif
    python -m engine embed-photos photos.gpkg photos_gair.gpkg --photo-field path
    python -m engine embed-locations sites.gpkg sites_gair.gpkg
"""
from __future__ import annotations

import argparse

from .options import add_operation, load_model, run


def register(subparsers) -> None:
    add_operation(subparsers, "embed_raster", _embed_raster)
    add_operation(subparsers, "embed_rasters", _embed_raster)
    for op_id in ("embed_features", "embed_photos", "embed_locations"):
        add_operation(subparsers, op_id, _embed_layer)


def _embed_raster(args: argparse.Namespace) -> int:
    from ..pipeline.distributed import init_from_env, shutdown

    shard = init_from_env()
    try:
        device = args.device
        if shard.world_size > 1 and shard.device.startswith("cuda") and device == "auto":
            device = shard.device
        if not shard.is_main:
            args.quiet = True  # one progress bar: rank 0's
        result = run(args, model=load_model(args, device))
        if shard.is_main:
            text = result.summary() if hasattr(result, "summary") else f"wrote {result}"
            print(text + (f" ({shard.world_size} ranks)" if shard.world_size > 1 else ""))
    finally:
        shutdown(shard)
    return 0


def _embed_layer(args: argparse.Namespace) -> int:
    print(run(args, model=load_model(args)).summary())
    return 0
