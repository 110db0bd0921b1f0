"""Pretraining runs never mix (issue 15, "Pretraining runs"): checkpoints carry the run's identity and a checksum;
--resume refuses another run's checkpoint naming the difference, a fresh run refuses a non-empty folder without
--overwrite, and a damaged newest checkpoint (cut short, flipped bytes) falls back to the newest intact one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import engine
from engine import GAIRError
from engine.cli.main import main
from engine.pretrain.state import (
    checkpoint_dir,
    config_differences,
    find_checkpoint,
    load_checkpoint,
    read_log,
    run_id,
    save_checkpoint,
)
from engine.pretrain.train import run

from .test_pretrain_train import cli_args, config, world  # noqa: F401 - `world` is the module's fixture

EIGHT = ["train.max_steps=8", "optim.lr=1e-3"]


def _cli(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(["pretrain", *argv])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def finished(world, tmp_path_factory):  # noqa: F811
    """A run of 8 steps with checkpoints at 4 and 8 (kept: both)."""
    out = tmp_path_factory.mktemp("done") / "run"
    result = run(config(world, out, *EIGHT))
    assert sorted(p.name for p in checkpoint_dir(out).glob("*.pt")) == ["step_00000004.pt", "step_00000008.pt"]
    return out, result


def test_identity_ignores_paths_and_logging_only(world, tmp_path):  # noqa: F811
    base = config(world, tmp_path / "a", *EIGHT).to_dict()
    moved = config(world, tmp_path / "b", *EIGHT, "train.log_every=5", "data.num_workers=2", "train.progress=true",
                   "train.keep_checkpoints=5").to_dict()
    assert run_id(base) == run_id(moved)
    other = config(world, tmp_path / "a", "train.max_steps=8", "optim.lr=2e-3").to_dict()
    assert run_id(other) != run_id(base)
    assert config_differences(base, other) == ["optim.lr: 0.001 there, 0.002 here"]


def test_a_fresh_run_refuses_a_non_empty_folder_without_overwrite(world, finished, tmp_path, capsys):  # noqa: F811
    out, _ = finished
    code, err = _cli(capsys, cli_args(world, out, "train.max_steps=4", "optim.lr=2e-3"))
    assert code == 2 and err.count("\n") == 1, err
    assert f"the output folder {out} is not empty" in err and "--resume" in err and "--overwrite" in err
    assert sorted(p.name for p in checkpoint_dir(out).glob("*.pt")) == ["step_00000004.pt", "step_00000008.pt"]
    # the case: the new run's step 4 would have been pruned in favour of the old run's step 8
    fresh = tmp_path / "fresh"
    for path in out.rglob("*"):
        target = fresh / path.relative_to(out)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    code, err = _cli(capsys, [*cli_args(world, fresh, "train.max_steps=4", "optim.lr=2e-3"), "--overwrite"])
    assert code == 0, err
    assert sorted(p.name for p in checkpoint_dir(fresh).glob("*.pt")) == ["step_00000004.pt"]
    payload = torch.load(checkpoint_dir(fresh) / "step_00000004.pt", weights_only=True)
    assert payload["config"]["optim"]["lr"] == 2e-3 and [r["step"] for r in read_log(fresh / "log.csv")] == \
        [str(s) for s in range(1, 5)]


def test_resume_refuses_another_runs_checkpoint_naming_the_difference(world, finished, capsys):  # noqa: F811
    out, _ = finished
    before = {p.name: p.stat().st_mtime_ns for p in checkpoint_dir(out).iterdir()}
    code, err = _cli(capsys, [*cli_args(world, out, "train.max_steps=8", "optim.lr=2e-3"), "--resume"])
    assert code == 2 and err.count("\n") == 1, err
    assert "step_00000008.pt belongs to another run (optim.lr: 0.001 there, 0.002 here)" in err, err
    assert {p.name: p.stat().st_mtime_ns for p in checkpoint_dir(out).iterdir()} == before
    with pytest.raises(GAIRError, match="belongs to another run"):
        load_checkpoint(checkpoint_dir(out) / "step_00000004.pt",
                        config(world, out, "train.max_steps=8", "optim.lr=2e-3", "train.seed=3").to_dict())


def _copy_run(src: Path, dst: Path) -> Path:
    for path in src.rglob("*"):
        if path.is_file():
            (dst / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dst / path.relative_to(src)).write_bytes(path.read_bytes())
    return dst


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(world, finished, tmp_path, damage):  # noqa: F811
    out = _copy_run(finished[0], tmp_path / "run")
    newest = checkpoint_dir(out) / "step_00000008.pt"
    data = bytearray(newest.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped":
        data[len(data) // 2] ^= 0xFF
    else:
        data = bytearray()
    newest.write_bytes(bytes(data))
    reason = r"is empty \(0 bytes" if damage == "empty" else "is damaged: its sha256 differs"
    with pytest.raises(GAIRError, match=rf"step_00000008.pt {reason}.*resume from another one"):
        find_checkpoint(str(newest), out)  # named explicitly: refused with the reason, never loaded
    with pytest.warns(UserWarning, match=rf"checkpoint step_00000008.pt {reason}.*resuming from the newest intact "
                                         r"checkpoint, step_00000004.pt"):
        result = run(config(world, out, *EIGHT), resume=True)
    assert result.steps == 8
    log = read_log(out / "log.csv")
    assert [r["step"] for r in log] == [str(s) for s in range(1, 9)]
    reference = read_log(finished[0] / "log.csv")
    assert [r["loss"] for r in log] == [r["loss"] for r in reference]  # resumed at 4: the same curve
    assert engine.load_model(result.bundle, device="cpu").fingerprint == \
        engine.load_model(finished[1].bundle, device="cpu").fingerprint


def test_no_intact_checkpoint_is_an_error_with_the_reasons(world, finished, tmp_path, capsys):  # noqa: F811
    out = _copy_run(finished[0], tmp_path / "run")
    (checkpoint_dir(out) / "step_00000008.pt").write_bytes(b"")
    four = checkpoint_dir(out) / "step_00000004.pt"
    four.write_bytes(four.read_bytes()[:100])
    code, err = _cli(capsys, [*cli_args(world, out, *EIGHT), "--resume"])
    assert code == 2 and err.count("\n") == 1, err
    assert "no intact checkpoint" in err and "step_00000008.pt is empty (0 bytes" in err and \
        "step_00000004.pt is damaged" in err, err


def test_pruning_keeps_only_this_runs_checkpoints(tmp_path):
    old = {"config": {"optim": {"lr": 1e-3}, "train": {"out_dir": "x"}}}
    new = {"config": {"optim": {"lr": 2e-3}, "train": {"out_dir": "x"}}}
    save_checkpoint(old, tmp_path, 5000, keep=1)
    save_checkpoint(new, tmp_path, 1000, keep=1)
    save_checkpoint(new, tmp_path, 2000, keep=1)
    names = sorted(p.name for p in checkpoint_dir(tmp_path).iterdir())
    assert names == ["step_00002000.pt", "step_00002000.pt.json",
                     "step_00005000.pt", "step_00005000.pt.json"]
    side = json.loads((checkpoint_dir(tmp_path) / "step_00002000.pt.json").read_text())
    assert side["run_id"] == run_id(new["config"]) and side["step"] == 2000 and len(side["sha256"]) == 64
