"""The [eval] section: pretraining ends by evaluating its bundle with engine.evaluate (reports on disk)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import GAIRError
from engine.pretrain.config import load_config
from engine.pretrain.synthetic import WorldSpec
from engine.pretrain.train import run
from tests.pretrain_helpers import manifest_world, tiny_config

FAST = ["train.checkpoint_every=100", "train.max_steps=2"]  # on top of pretrain_helpers.FAST


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    spec = WorldSpec(size_px=160, n_photos=64, n_labels=120, seed=2)
    return manifest_world(tmp_path_factory.mktemp("evalworld"), spec)


def config(world, out: Path, *extra: str):
    return tiny_config(world, out, *FAST, *extra)


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
