"""The training loop end to end: one process, torchrun with 2 gloo processes, resume after SIGKILL, NaN stop, CSP,
and the bundle it writes going through `engine embed-raster`."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rasterio
import torch

import engine
from engine import GAIRError
from engine.pretrain.state import read_log
from engine.pretrain.synthetic import WorldSpec
from engine.pretrain.train import run
from engine.pretrain.weights import build_start
from tests.pretrain_helpers import FAST as BASE_FAST
from tests.pretrain_helpers import manifest_world, tiny_config

ROOT = Path(__file__).resolve().parents[1]
FAST = ["train.checkpoint_every=4"]  # on top of pretrain_helpers.FAST
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
# Runs engine.pretrain with every sample slowed down, so a SIGKILL surely lands mid-run.
SLOW_LAUNCH = """
import sys, time
import engine.pretrain.data as data
original = data.PretrainDataset.__getitem__
def slow(self, key):
    time.sleep(float(sys.argv[1]))
    return original(self, key)
data.PretrainDataset.__getitem__ = slow
from engine.pretrain.__main__ import main
raise SystemExit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    spec = WorldSpec(size_px=192, n_photos=200, n_labels=10, seed=5)
    return manifest_world(tmp_path_factory.mktemp("trainworld"), spec)


def config(world, out: Path, *extra: str):
    return tiny_config(world, out, *FAST, *extra)


def cli_args(world, out: Path, *extra: str) -> list[str]:
    args = ["--config", str(ROOT / "configs" / "tiny.toml"), "--manifest", str(world.root / "manifest.csv"),
            "--out", str(out)]
    for item in (*BASE_FAST, *FAST, *extra):
        args += ["--set", item]
    return args


def test_single_process_run_to_bundle_and_embed_raster(world, tmp_path):
    out = tmp_path / "run"
    start, _ = build_start(config(world, out))
    result = run(config(world, out, "train.max_steps=6"))
    rows = read_log(result.log)
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert all(float(r["loss"]) > 0 for r in rows) and float(rows[-1]["samples_per_s"]) > 0
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["step_00000004.pt", "step_00000006.pt"]
    model = engine.load_model(result.bundle, device="cpu")
    assert model.fingerprint != start.fingerprint
    assert int((model.queue_for_location != 0).any(dim=0).sum()) == 6 * 16  # raw lon/lat of every batch so far
    assert model.queue_for_location[0].max() == pytest.approx(11.35, abs=0.1)  # longitudes in row 0
    embedded = tmp_path / "emb.tif"
    from engine.cli.main import main as engine_cli

    assert engine_cli(["embed-raster", str(world.raster), str(embedded), "--model", str(result.bundle),
                       "--no-quicklook"]) == 0
    with rasterio.open(embedded) as ds:
        assert ds.count == 32 and ds.tags()["GAIR_MODEL"] == model.fingerprint
    # worker processes load the same batches: augmentations are seeded per (epoch, sample), not per process
    workers = run(config(world, tmp_path / "workers", "train.max_steps=3", "data.num_workers=2"))
    for a, b in zip(rows[:3], read_log(workers.log)):  # both still in warm-up, so the same learning rates
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), abs=1e-6)


def test_resume_after_sigkill_continues_the_same_loss_curve(world, tmp_path, capsys):
    from engine.pretrain.__main__ import main

    steps = ["train.max_steps=12"]
    assert main(cli_args(world, tmp_path / "a", *steps)) == 0
    killed_dir = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_LAUNCH, "0.01", *cli_args(world, killed_dir, *steps)],
                            env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (killed_dir / "checkpoints" / "step_00000004.pt").exists():
            assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (killed_dir / "bundle").exists()
    capsys.readouterr()
    assert main([*cli_args(world, killed_dir, *steps), "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    a, b = read_log(tmp_path / "a" / "log.csv"), read_log(killed_dir / "log.csv")
    assert [r["step"] for r in b] == [str(s) for s in range(1, 13)]
    for ra, rb in zip(a, b):
        for key in ("loss", "s2r", "r2s", "sv_loc", "rs_loc", "lr"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), abs=1e-6), (ra["step"], key)
    fa = engine.load_model(tmp_path / "a" / "bundle", device="cpu").fingerprint
    assert fa == engine.load_model(killed_dir / "bundle", device="cpu").fingerprint


def test_torchrun_two_gloo_processes(world, tmp_path):
    out = tmp_path / "ddp"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "engine.pretrain",
                           *cli_args(world, out, "train.max_steps=4", "objective.gather_negatives=true")],
                          env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es) x batch 16" in done.stdout and done.stdout.count("bundle:") == 1  # rank 0 alone writes
    assert len(read_log(out / "log.csv")) == 4
    model = engine.load_model(out / "bundle", device="cpu")
    assert int((model.queue_for_location != 0).any(dim=0).sum()) == 4 * 2 * 16  # both ranks' locations are queued
    payload = torch.load(max((out / "checkpoints").glob("*.pt")), weights_only=True)
    assert payload["world_size"] == 2 and len(payload["rng"]) == 2
    from engine.cli.main import main as engine_cli

    assert engine_cli(["embed-raster", str(world.raster), str(tmp_path / "e.tif"), "--model", str(out / "bundle"),
                       "--no-quicklook"]) == 0


def test_non_finite_loss_stops_naming_the_step(world, tmp_path, monkeypatch):
    from engine.pretrain import objective

    calls = {"n": 0}
    original = objective.info_nce

    def poisoned(*args, **kwargs):
        calls["n"] += 1  # call 1 is the dry run that finds unused parameters, call 3 is step 2
        a2b, b2a = original(*args, **kwargs)
        return (a2b * float("nan"), b2a) if calls["n"] == 3 else (a2b, b2a)

    monkeypatch.setattr(objective, "info_nce", poisoned)
    with pytest.raises(GAIRError, match="non-finite at step 2"):
        run(config(world, tmp_path / "nan", "train.max_steps=5"))
    assert not (tmp_path / "nan" / "bundle").exists()


def _global_determinism() -> tuple:
    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
            os.environ.get("CUBLAS_WORKSPACE_CONFIG"))


@pytest.mark.parametrize("workspace", [None, ":16:8"])
def test_deterministic_run_leaves_global_state_as_it_found_it(world, tmp_path, monkeypatch, workspace):
    """train.deterministic turns the flags on for the run only: during it they are on, after it as before."""
    if workspace is None:
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    else:
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", workspace)
    before = _global_determinism()
    assert before[:4] == (False, False, False, False)
    seen = []
    run(config(world, tmp_path / "d", "train.max_steps=2", "train.deterministic=true"),
        progress=lambda _: seen.append(_global_determinism()))
    assert seen and all(s[0] and s[1] and not s[2] and s[3] for s in seen)
    assert {s[4] for s in seen} == {workspace or ":4096:8"}  # a user's own setting is kept
    assert _global_determinism() == before


def test_cancel_stops_without_a_bundle(world, tmp_path):
    calls = iter(range(100))
    with pytest.raises(engine.Cancelled, match="cancelled at step 2"):
        run(config(world, tmp_path / "c", "train.max_steps=5"), cancel=lambda: next(calls) >= 2)
    assert not (tmp_path / "c" / "bundle").exists()


@pytest.mark.parametrize("encoder", ["gridcell", "rff"])
def test_csp_objective_trains_only_the_location_encoder(world, tmp_path, encoder):
    out = tmp_path / encoder
    cfg = config(world, out, "objective.name=csp", f'csp.encoder="{encoder}"', "train.max_steps=3", "optim.lr=1e-3")
    start, _ = build_start(cfg)
    result = run(cfg)
    assert {"inbatch", "randloc", "simcse"} <= set(read_log(result.log)[0])
    trained = engine.load_model(result.bundle, device="cpu").state_dict()
    changed = {k for k, v in start.state_dict().items() if not torch.equal(v, trained[k])}
    if encoder == "gridcell":
        assert changed == set() and result.extra.name == "gridcell_location_encoder.safetensors"
    else:
        assert changed and all(k.startswith("location_encoder.") and ".capsule.0.b" not in k for k in changed)


def test_cli_reports_config_errors(tmp_path, capsys):
    from engine.pretrain.__main__ import main

    assert main(["--config", str(ROOT / "configs" / "tiny.toml"), "--out", str(tmp_path)]) == 2
    assert "no manifest" in capsys.readouterr().err
    assert main(["--config", str(ROOT / "configs" / "tiny.toml"), "--set", "objective.loc_negatives=all"]) == 2
    assert "objective.loc_negatives = 'all' is not one of" in capsys.readouterr().err
