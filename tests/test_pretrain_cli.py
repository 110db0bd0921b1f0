"""The pretraining commands of the one CLI (`python -m engine pretrain | build-dataset | synthetic`), their
`python -m engine.pretrain...` aliases, and the CLI's one error path (GAIRError -> exit 2, Ctrl-C -> exit 130)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli.main import main as engine_cli
from engine.pretrain.__main__ import main as pretrain_alias
from engine.pretrain.build_dataset import main as build_alias
from engine.pretrain.manifest import read_manifest
from engine.pretrain.synthetic import main as synthetic_alias

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.toml")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("cliworld")
    assert engine_cli(["synthetic", str(out), "--size", "128", "--photos", "40", "--labels", "5"]) == 0
    return out


def test_synthetic_and_its_alias_write_the_same_world(world, tmp_path, capsys):
    assert synthetic_alias([str(tmp_path), "--size", "128", "--photos", "40", "--labels", "5"]) == 0
    assert f"raster {tmp_path / 'sentinel2.tif'}" in capsys.readouterr().out
    for name in ("sentinel2.tif", "photos.csv", "labels.csv"):
        assert (world / name).read_bytes() == (tmp_path / name).read_bytes()


def test_build_dataset_command_and_alias_agree(world, tmp_path, capsys):
    args = ["--rasters", str(world / "sentinel2.tif"), "--photos", str(world / "photos.csv"), "--config", TINY,
            "--quiet"]
    assert engine_cli(["build-dataset", *args, "--out", str(tmp_path / "a.csv")]) == 0
    assert build_alias([*args, "--out", str(tmp_path / "b.csv")]) == 0
    assert capsys.readouterr().out.count("samples written") == 2
    a, b = read_manifest(tmp_path / "a.csv"), read_manifest(tmp_path / "b.csv")
    assert len(a) > 20 and [s.window for s in a] == [s.window for s in b]
    assert {s.window[2:] for s in a} == {(64, 64)}  # the tiny config's 640 m crop at 10 m


def test_pretrain_print_config_through_both_entry_points(capsys):
    assert engine_cli(["pretrain", "--config", TINY, "--set", "optim.lr=1e-3", "--quiet", "--print-config"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert pretrain_alias(["--config", TINY, "--set", "optim.lr=1e-3", "--quiet", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out) == first
    assert first["optim"]["lr"] == 1e-3 and first["train"]["progress"] is False


def test_errors_are_one_line_with_exit_2(tmp_path, capsys):
    assert engine_cli(["pretrain", "--config", TINY, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no manifest") and err.count("\n") == 1
    assert build_alias(["--rasters", str(tmp_path / "none.tif"), "--photos", "x.csv", "--out", "m.csv"]) == 2
    assert capsys.readouterr().err.startswith("error: point table x.csv not found")


def test_ctrl_c_is_a_cancel_with_exit_130(world, tmp_path, monkeypatch, capsys):
    import engine.pretrain.train as train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "run", interrupted)
    assert engine_cli(["pretrain", "--config", TINY, "--manifest", str(tmp_path / "m.csv"),
                       "--out", str(tmp_path)]) == 130
    assert "cancelled" in capsys.readouterr().err


def test_module_aliases_run_as_documented(tmp_path):
    for module in ("engine.pretrain", "engine.pretrain.build_dataset", "engine.pretrain.synthetic"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                              check=False, timeout=120)
        assert done.returncode == 0 and done.stdout.startswith("usage: "), done.stderr[-2000:]
    done = subprocess.run([sys.executable, "-m", "engine", "--help"], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=120)
    assert all(name in done.stdout for name in ("pretrain", "build-dataset", "synthetic"))


def test_the_clis_cancel_callback_stops_build_dataset_leaving_nothing(world, tmp_path):
    from engine import Cancelled
    from engine.cli.main import build_parser

    out = tmp_path / "m.csv"
    args = build_parser().parse_args(["build-dataset", "--rasters", str(world / "sentinel2.tif"), "--photos",
                                      str(world / "photos.csv"), "--out", str(out), "--quiet"])
    args.cancel = lambda: True  # the one CLI's Ctrl-C callback, already tripped
    with pytest.raises(Cancelled, match="nothing was written"):
        args.handler(args)
    assert args.cancellable and not out.exists() and not list(tmp_path.iterdir())
