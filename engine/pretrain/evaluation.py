"""The end-of-pretraining evaluation ([eval] section): engine.evaluate on the bundle just written.

Reports go to <out_dir>/eval/{patches,points,location}/report.{json,html}; a CSP run with the grid-cell encoder
evaluates that encoder in the location protocol.
"""
from __future__ import annotations

from pathlib import Path

from .config import PretrainConfig


def evaluate_bundle(cfg: PretrainConfig, bundle: Path, gridcell: Path | None = None) -> dict[str, Path]:
    """Run the evaluations the [eval] section asks for; returns {task: report folder}."""
    from ..evaluate import evaluate_location, evaluate_patches, evaluate_points
    from ..evaluate.location import LOCATION_RATIOS
    from ..evaluate.protocol import LEARNING_FRACTIONS, ProtocolConfig
    from ..runtime.loading import load_model

    e = cfg.eval
    out = Path(e.output or Path(cfg.train.out_dir) / "eval")
    block = e.block_size_m or None
    model = load_model(str(bundle), device=cfg.train.device, backend="torch")
    done: dict[str, Path] = {}
    common = dict(splits=(e.split,), folds=e.folds, block_size=block, seed=cfg.train.seed)
    if e.patches:
        evaluate_patches(e.patches, out / "patches", model, config=ProtocolConfig(fractions=LEARNING_FRACTIONS,
                                                                                  **common))
        done["patches"] = out / "patches"
    if e.raster:
        evaluate_points(e.raster, e.points, out / "points", model, class_field=e.class_field,
                        config=ProtocolConfig(fractions=LEARNING_FRACTIONS, **common))
        done["points"] = out / "points"
    if e.location:
        encoder = "gridcell" if gridcell is not None else "gair"
        evaluate_location(e.points, out / "location", model, class_field=e.class_field, encoder=encoder,
                          gridcell=gridcell, config=ProtocolConfig(fractions=LOCATION_RATIOS, **common))
        done["location"] = out / "location"
    for task, folder in done.items():
        print(f"evaluation ({task}): {folder / 'report.html'}")
    return done
