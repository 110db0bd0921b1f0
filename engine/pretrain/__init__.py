"""GAIR pretraining: data (synthetic world, manifest builder, dataset), objectives (GAIR, CSP), and the loop.

    python -m engine synthetic world/                   # a procedural world for trying things out
    python -m engine build-dataset --rasters world/sentinel2.tif --photos world/photos.csv --out m.csv
    python -m engine pretrain --config configs/tiny.toml --manifest m.csv --out runs/tiny
    torchrun --nproc_per_node 8 -m engine pretrain --config configs/base.toml --manifest m.csv --out runs/base

(`python -m engine.pretrain`, `python -m engine.pretrain.build_dataset` and `.synthetic` are aliases; engine/cli/
pretrain.py defines the commands.)

The result is a model bundle (`<out>/bundle`) that `engine.load_model`, the CLI and the plugin load.
Torch is imported by the submodules, not here.
"""
