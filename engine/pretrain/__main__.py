"""`python -m engine.pretrain`: pretrain GAIR from a manifest; under torchrun, one process per GPU (or CPU rank).

    python -m engine.pretrain --config configs/tiny.toml --manifest data/manifest.csv --out runs/tiny
    torchrun --nproc_per_node 8 -m engine.pretrain --config configs/base.toml --manifest m.csv --out runs/base
    python -m engine.pretrain --config configs/tiny.toml --out runs/tiny --resume      # continue after a crash
    python -m engine.pretrain --config configs/tiny.toml --set objective.query_mode=mean --set optim.lr=1e-3
"""
from __future__ import annotations

import argparse
import sys

from ..errors import GAIRError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine.pretrain", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--config", help="TOML or YAML config (configs/tiny.toml, configs/base.toml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one option, e.g. optim.lr=1e-3 or objective.loc_negatives=\"batch+queue\"")
    parser.add_argument("--manifest", help="= data.manifest")
    parser.add_argument("--out", help="= train.out_dir")
    parser.add_argument("--init", help="= init.source: random, a bundle folder, a checkpoint .pth, or hub")
    parser.add_argument("--max-steps", type=int, help="= train.max_steps")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue from CHECKPOINT, or from the newest one in the output folder (a fresh start when there is none yet)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    from .config import load_config

    args = build_parser().parse_args(argv)
    shortcuts = {"data.manifest": args.manifest, "train.out_dir": args.out, "init.source": args.init,
                 "train.max_steps": args.max_steps}
    try:
        cfg = load_config(args.config, args.overrides, shortcuts)
        if args.print_config:
            import json

            print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        from .train import run

        result = run(cfg, resume=args.resume)
    except GAIRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.bundle is not None:
        print(f"done: {result.steps} steps, last loss {result.last_loss:.4f}, {result.samples_per_s:.1f} samples/s; "
              f"bundle {result.bundle}; log {result.log}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
