"""The one distributed setup (pipeline.distributed.init_from_env) shared by sharded embedding and pretraining."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine import GAIRError
from engine.pipeline.distributed import Shard, init_from_env, shutdown

ROOT = Path(__file__).resolve().parents[1]


def test_alone_is_a_single_shard_without_torch():
    code = ("import sys; from engine.pipeline.distributed import init_from_env; s = init_from_env('auto'); "
            "print(s.rank, s.world_size, s.device, s.owns_group, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                          env={"PATH": "", "PYTHONPATH": str(ROOT), "WORLD_SIZE": "1"})
    assert done.stdout.split() == ["0", "1", "cpu", "False", "False"]  # the ONNX path never imports torch


def test_device_choices_and_missing_cuda_are_clear_errors(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(GAIRError, match="device must be one of auto, cuda, cpu, got 'tpu'"):
        init_from_env("tpu")
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GAIRError, match="CUDA is not available"):
        init_from_env("cuda")
    assert init_from_env("cpu") == Shard()


def test_shutdown_leaves_a_group_it_did_not_start(monkeypatch):
    import torch.distributed as dist

    ended = []
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a: ended.append(1))
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    shutdown(Shard(0, 2, "cpu", owns_group=False))
    assert ended == []
    shutdown(Shard(0, 2, "cpu", owns_group=True))
    assert ended == [1]
