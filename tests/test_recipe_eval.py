"""The [eval] section: pretraining ends by evaluating its bundle with engine.evaluate (reports on disk)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import GAIRError
from engine.io.vectors import read_point_table
from engine.pretrain.build_dataset import build_manifest
from engine.pretrain.config import load_config
from engine.pretrain.synthetic import WorldSpec, make_world
from engine.pretrain.train import run

ROOT = Path(__file__).resolve().parents[1]
FAST = ["data.num_workers=0", "train.batch_size=16", "train.log_every=1", "train.progress=false",
        "train.checkpoint_every=100", "optim.warmup_epochs=0.5", "train.tensorboard=false", "train.max_steps=2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = make_world(tmp_path_factory.mktemp("evalworld"), WorldSpec(size_px=160, n_photos=64, n_labels=120, seed=2))
    build_manifest([w.raster], read_point_table(w.photos_csv), w.root / "manifest.csv", 640.0)
    return w


def config(world, out: Path, *extra: str):
    return load_config(ROOT / "configs" / "tiny.toml", [*FAST, f'data.manifest="{world.root / "manifest.csv"}"',
                                                        f'train.out_dir="{out}"', *extra])


@pytest.mark.parametrize("objective", ["gair", "csp-released"])
def test_run_ends_with_the_location_evaluation(world, tmp_path, objective):
    # tiny.toml names its objective, and a file's own values win over a preset's: ask for csp here too
    extra = ['csp.preset="csp-released"', 'objective.name="csp"'] if objective == "csp-released" else []
    cfg = config(world, tmp_path / "run", "eval.location=true", f'eval.points="{world.labels_csv}"',
                 'eval.class_field="label"', "eval.folds=3", *extra)
    result = run(cfg)
    folder = tmp_path / "run" / "eval" / "location"
    assert result.evaluations == {"location": folder}
    report = json.loads((folder / "report.json").read_text())
    assert report["task"] == "location" and (folder / "report.html").is_file()
    assert report["encoder"] == ("gridcell" if objective == "csp-released" else "gair")
    assert set(report["results"]["random"]["methods"]) == {"pretrained", "random"}


def test_eval_section_checks():
    with pytest.raises(GAIRError, match="need eval.points"):
        load_config(None, ["eval.location=true"])
    with pytest.raises(GAIRError, match="eval.split"):
        load_config(None, ['eval.points="p.csv"', "eval.location=true", 'eval.split="blocks"'])
    assert not load_config(None).eval.wanted
