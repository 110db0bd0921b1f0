"""`python -m engine.pretrain` (and under torchrun `-m engine.pretrain`): an alias of `python -m engine pretrain`.

    python -m engine.pretrain --config configs/tiny.toml --manifest data/manifest.csv --out runs/tiny
    torchrun --nproc_per_node 8 -m engine.pretrain --config configs/base.toml --manifest m.csv --out runs/base
"""
from __future__ import annotations

from ..cli.pretrain import run_alias


def main(argv: list[str] | None = None) -> int:
    return run_alias("pretrain", argv)


if __name__ == "__main__":
    raise SystemExit(main())
