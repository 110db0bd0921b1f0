"""scripts/bench_embed.py's end-to-end child: it times the pipeline only (start-up measured apart) and counts the
crops the pipeline encoded, from which encodes_per_px comes."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import engine
from engine.model.gair import GAIRModel
from engine.pipeline import embed_raster

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_embed.py"


def _script():
    spec = importlib.util.spec_from_file_location("bench_embed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_child_times_the_pipeline_and_counts_the_crops_it_encoded(tmp_path, monkeypatch):
    bench = _script()
    torch.manual_seed(0)
    model = engine.GAIRModel(engine.GAIRConfig.tiny()).eval()
    bundle = engine.save_bundle(model, tmp_path / "bundle")
    side = 150  # tiny crops are 64 px: edge crops and overlap make it > 1 encode per pixel
    bench.write_raster(tmp_path / "s2.tif", side)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(SCRIPT), "--child", "--bundle", str(bundle), "--raster",
                           str(tmp_path / "s2.tif"), "--out", str(tmp_path / "out.tif"), "--dims", "8", "--batch", "4",
                           "--threads", "1"], capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result["startup"]) == {"interpreter and imports", "model load", "fingerprint", "scikit-learn"}
    assert all(value >= 0 for value in result["startup"].values()) and result["seconds"] > 0
    assert result["startup"]["interpreter and imports"] > 0.1  # torch alone takes longer to import

    encoded = []  # the same run in this process, counted at the class: the child's count is every encoded crop
    original = GAIRModel.rs_tokens
    monkeypatch.setattr(GAIRModel, "rs_tokens", lambda self, x: encoded.append(len(x)) or original(self, x))
    embed_raster(tmp_path / "s2.tif", tmp_path / "again.tif", engine.load_model(bundle, device="cpu"), dims=8,
                 batch_size=4, quicklook=False)
    assert result["crops"] == sum(encoded) > (side / 64) ** 2
    assert abs(result["encodes_per_px"] - sum(encoded) * 64 * 64 / side**2) < 1e-9
    assert result["encodes_per_px"] > 1
