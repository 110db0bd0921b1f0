"""Runtime pieces of the training loop: scoped determinism, AMP, optimizer groups, LR schedule, and the
dry run that freezes parameters the objective never reaches (DDP needs a gradient for every trainable one)."""
from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

import torch
from torch import nn

from ..errors import GAIRError

CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the duration of a run only: the process-wide torch flags and the cuBLAS workspace
    variable are put back as they were on exit (library code leaves global state alone)."""
    if not enabled:
        yield
        return
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, os.environ.get(CUBLAS_WORKSPACE))
    os.environ.setdefault(CUBLAS_WORKSPACE, ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]
        if saved[4] is None:
            os.environ.pop(CUBLAS_WORKSPACE, None)
        else:
            os.environ[CUBLAS_WORKSPACE] = saved[4]


def amp_settings(mode: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use a grad scaler)."""
    if mode == "auto":
        mode = "fp16" if device.type == "cuda" else "none"
    if mode == "none":
        return None, False
    if mode == "fp16" and device.type != "cuda":
        raise GAIRError("train.amp = fp16 needs CUDA; use bf16 or none on CPU")
    return (torch.float16, True) if mode == "fp16" else (torch.bfloat16, False)


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: biases and norm weights (1-D) are exempt."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then half-cycle cosine down to min_ratio at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def freeze_unused(objective: nn.Module, example: dict) -> list[str]:
    """Freeze parameters the objective never reaches (e.g. nerf_fn, radar_proj), found by one dry run.

    DDP needs every trainable parameter to get a gradient each step; the dry run forks the RNG so it changes nothing.
    """
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        objective.zero_grad(set_to_none=True)
        objective(**example)["loss"].backward()
    unused = [n for n, p in objective.named_parameters() if p.requires_grad and p.grad is None]
    for name, p in objective.named_parameters():
        p.grad = None
        if name in unused:
            p.requires_grad_(False)
    return unused


def example_batch(model: nn.Module, device: torch.device) -> dict:
    c = model.config
    return {"rs": torch.zeros(2, c.rs_channels, c.rs_input_size, c.rs_input_size, device=device),
            "sv": torch.zeros(2, 3, c.sv_input_size, c.sv_input_size, device=device),
            "rel_xy": torch.full((2, 2), 0.5, dtype=torch.float64), "lonlat": torch.zeros(2, 2, device=device)}
