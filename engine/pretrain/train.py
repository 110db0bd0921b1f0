"""The pretraining loop: one process, or many through torchrun (DDP; NCCL on GPUs, gloo on CPU).

AdamW (no decay on biases and norms), linear warm-up then half-cycle cosine per step, gradient accumulation and
clipping, AMP (fp16 with a grad scaler, or bf16) on CUDA, optional torch.compile. Checkpoints are atomic and hold
model, optimizer, scheduler, scaler, every rank's RNG, the queue and the step, so a run killed at any point resumes
on the same loss curve. A non-finite loss stops the run before the optimizer step, naming the step.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..errors import Cancelled, GAIRError
from .config import PretrainConfig
from .data import EpochSampler, PretrainDataset, make_loader
from .manifest import read_manifest
from .state import RunLog, find_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .weights import build_start, build_teacher, refresh_fingerprint


@dataclass
class TrainResult:
    out_dir: Path
    bundle: Path | None
    log: Path
    steps: int
    last_loss: float
    samples_per_s: float
    start: str
    extra: Path | None = None  # the grid-cell encoder of a CSP run


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False


def _setup_distributed(device_pref: str) -> tuple[_Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = _Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    if device_pref not in ("auto", "cuda", "cpu"):
        raise GAIRError(f"train.device must be auto, cuda or cpu, got {device_pref!r} (torchrun picks the GPU per rank)")
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise GAIRError("train.device = cuda but CUDA is not available; use auto or cpu")
    device = torch.device(f"cuda:{info.local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        info.owns_group = True
    return info, device


def _amp(mode: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
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


def _example(model: nn.Module, device: torch.device) -> dict:
    c = model.config
    return {"rs": torch.zeros(2, c.rs_channels, c.rs_input_size, c.rs_input_size, device=device),
            "sv": torch.zeros(2, 3, c.sv_input_size, c.sv_input_size, device=device),
            "rel_xy": torch.full((2, 2), 0.5, dtype=torch.float64), "lonlat": torch.zeros(2, 2, device=device)}


def _objective(cfg: PretrainConfig, model: nn.Module, queue_filled: int) -> nn.Module:
    if cfg.objective.name == "csp":
        from .csp import CSPObjective

        return CSPObjective(model, cfg.csp, cfg.objective.query_mode)
    from .objective import GAIRObjective

    return GAIRObjective(model, cfg.objective, build_teacher(cfg, model), queue_filled)


def run(cfg: PretrainConfig, resume: str | bool = False, progress: Callable[[float], None] | None = None,
        cancel: Callable[[], bool] | None = None) -> TrainResult:
    """Train as configured; rank 0 writes out_dir/{log.csv, checkpoints/, bundle/}. See the module doc."""
    info, device = _setup_distributed(cfg.train.device)
    try:
        return _run(cfg, info, device, resume, progress, cancel)
    finally:
        if info.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _run(cfg, info: _Dist, device, resume, progress, cancel) -> TrainResult:  # noqa: C901 - one linear recipe
    t = cfg.train
    out_dir = Path(t.out_dir)
    main = info.rank == 0
    if t.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    if not cfg.data.manifest:
        raise GAIRError("no manifest: set data.manifest (make one with `python -m engine.pretrain.build_dataset`)")
    model, start = build_start(cfg)
    model.to(device)
    samples = read_manifest(cfg.data.manifest)
    dataset = PretrainDataset(samples, model.config, cfg.data, train=True, seed=t.seed)
    sampler = EpochSampler(len(dataset), info.world, info.rank, seed=t.seed)
    loader = make_loader(dataset, sampler, t.batch_size, cfg.data.num_workers, pin_memory=device.type == "cuda")
    accum = cfg.optim.accum_steps
    steps_per_epoch = len(loader) // accum
    if steps_per_epoch < 1:
        raise GAIRError(f"one epoch gives {len(loader)} batches, fewer than optim.accum_steps = {accum}")
    total = t.max_steps or t.epochs * steps_per_epoch
    warmup = round(cfg.optim.warmup_epochs * steps_per_epoch)
    eff_batch = t.batch_size * accum * info.world
    lr = cfg.optim.lr or cfg.optim.base_lr * eff_batch / 256

    objective = _objective(cfg, model, start.queue_filled).to(device)
    frozen = freeze_unused(objective, _example(model, device))
    optimizer = torch.optim.AdamW(param_groups(objective, cfg.optim.weight_decay), lr=lr, betas=cfg.optim.betas)
    min_ratio = cfg.optim.min_lr / lr if lr else 0.0
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total, min_ratio))
    amp_dtype, use_scaler = _amp(t.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)

    step, resumed_at = 0, None
    ckpt_path = find_checkpoint(resume, out_dir)
    if ckpt_path is not None:
        payload = load_checkpoint(ckpt_path)
        model.load_state_dict(payload["model"])
        objective.load_state_dict({**objective.state_dict(), **payload["objective"]})
        objective.load_extra_state(payload["objective_extra"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        scaler.load_state_dict(payload["scaler"])
        step = resumed_at = payload["step"]
        if payload["world_size"] == info.world:
            set_rng_state(payload["rng"][info.rank])
        elif main:
            print(f"note: resumed on {info.world} processes from a {payload['world_size']}-process run: "
                  "the data order and random draws differ from an uninterrupted run")
    else:
        torch.manual_seed(t.seed + 1000 * info.rank)
        np.random.seed(t.seed + info.rank)

    net: nn.Module = objective
    if info.world > 1:
        net = nn.parallel.DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None,
                                                  broadcast_buffers=False)
    forward = torch.compile(net) if t.compile else net
    trainable = [p for p in objective.parameters() if p.requires_grad]

    out_dir.mkdir(parents=True, exist_ok=True)
    log = None
    if main:
        (out_dir / "pretrain_config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
        print(f"start: {start.source}; {len(samples)} samples, {info.world} process(es) x batch {t.batch_size} x "
              f"accum {accum}; lr {lr:.3g}; {total} steps ({steps_per_epoch}/epoch); device {device}")
        for note in start.notes:
            print(note)
        if frozen:
            print(f"frozen (unused by the objective): {len(frozen)} tensors, e.g. {', '.join(frozen[:4])}")
        if ckpt_path is not None:
            print(f"resumed from {ckpt_path} at step {step}")
    bar = None
    if main and t.progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=step, unit="step", dynamic_ncols=True)

    micro = step * accum
    epoch, skip = divmod(micro, len(loader))
    sampler.set_epoch(epoch, skip * t.batch_size)
    batches = iter(loader)
    last_loss, rate, tick, tick_step = math.nan, 0.0, time.perf_counter(), step
    ddp = isinstance(net, nn.parallel.DistributedDataParallel)
    try:
        while step < total:
            if cancel and cancel():
                raise Cancelled(f"pretraining cancelled at step {step}; resume from the last checkpoint in {out_dir}")
            optimizer.zero_grad(set_to_none=True)
            sums: dict[str, torch.Tensor] = {}
            for a in range(accum):
                try:
                    batch = next(batches)
                except StopIteration:
                    epoch += 1
                    sampler.set_epoch(epoch)
                    batches = iter(loader)
                    batch = next(batches)
                lonlat = batch["lonlat"].to(device, non_blocking=True)
                inputs = {"rs": batch["rs"].to(device, non_blocking=True), "sv": batch["sv"].to(device, non_blocking=True),
                          "rel_xy": batch["rel_xy"], "lonlat": lonlat}
                sync = net.no_sync() if ddp and a < accum - 1 else contextlib.nullcontext()
                with sync:
                    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                        out = forward(**inputs)
                    scaler.scale(out["loss"] / accum).backward()
                objective.after_step(lonlat)
                for key, value in out.items():
                    sums[key] = sums.get(key, 0.0) + value.detach().float() / accum
            names = list(sums)
            values = torch.stack([sums[k] for k in names])
            if info.world > 1:
                dist.all_reduce(values)
                values /= info.world
            values = values.cpu().tolist()
            last_loss = values[0]
            if not all(math.isfinite(v) for v in values):
                raise GAIRError(f"the loss became non-finite at step {step + 1} ({dict(zip(names, values))}); lower "
                                f"optim.lr, set optim.clip_grad, or use train.amp = bf16, then --resume from a checkpoint")
            if cfg.optim.clip_grad > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}")
            if step % t.log_every == 0 or step == total:
                now = time.perf_counter()
                rate = (step - tick_step) * eff_batch / max(now - tick, 1e-9)
                tick, tick_step = now, step
                if main:
                    if log is None:
                        log = RunLog(out_dir, ["step", "epoch", "lr", *names, "samples_per_s"], resumed_at, t.tensorboard)
                    log.write({"step": step, "epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
                               **dict(zip(names, values)), "samples_per_s": rate})
            if step % t.checkpoint_every == 0 or step == total:
                _checkpoint(cfg, info, model, objective, optimizer, scheduler, scaler, step)
            if progress and main:
                progress(step / total)
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()

    bundle, extra = None, None
    if hasattr(objective, "finish"):
        extra = objective.finish(out_dir) if main else None
    if main:
        import engine

        refresh_fingerprint(model)
        bundle = engine.save_bundle(model.eval(), out_dir / "bundle", source=f"engine.pretrain ({start.source}, {step} steps)")
        print(f"bundle: {bundle} (fingerprint {model.fingerprint})")
    return TrainResult(out_dir, bundle, out_dir / "log.csv", step, last_loss, rate, start.source, extra)


def _checkpoint(cfg, info: _Dist, model, objective, optimizer, scheduler, scaler, step: int) -> None:
    """Gather every rank's RNG state; rank 0 writes the checkpoint."""
    states = [None] * info.world
    if info.world > 1:
        dist.all_gather_object(states, rng_state())
    else:
        states = [rng_state()]
    if info.rank != 0:
        return
    extra_objective = {k: v for k, v in objective.state_dict().items() if not k.startswith("model.")}
    save_checkpoint({"model": model.state_dict(), "objective": extra_objective, "objective_extra": objective.extra_state(),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                     "rng": states, "world_size": info.world, "config": cfg.to_dict(),
                     "gair_config": model.config.to_dict()}, cfg.train.out_dir, step, cfg.train.keep_checkpoints)
