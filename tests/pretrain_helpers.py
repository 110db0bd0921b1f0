"""What pretraining tests share: a synthetic world with its manifest, and the tiny config pointed at it."""
from __future__ import annotations

from pathlib import Path

from engine.io.vectors import read_point_table
from engine.pretrain.build_dataset import build_manifest
from engine.pretrain.config import load_config
from engine.pretrain.synthetic import WorldSpec, make_world

ROOT = Path(__file__).resolve().parents[1]
# few steps, no workers, no tensorboard: the settings every pretraining test starts from
FAST = ["data.num_workers=0", "train.batch_size=16", "train.log_every=1", "train.progress=false",
        "optim.warmup_epochs=0.5", "train.tensorboard=false"]


def manifest_world(folder: Path, spec: WorldSpec):
    """A synthetic world with manifest.csv built from its photos (640 m crops)."""
    world = make_world(folder, spec)
    build_manifest([world.raster], read_point_table(world.photos_csv), world.root / "manifest.csv", 640.0)
    return world


def tiny_config(world, out: Path, *overrides: str):
    """configs/tiny.toml training on `world` into `out`, with FAST and the given `section.key=value` overrides."""
    return load_config(ROOT / "configs" / "tiny.toml", [*FAST, f'data.manifest="{world.root / "manifest.csv"}"',
                                                        f'train.out_dir="{out}"', *overrides])
