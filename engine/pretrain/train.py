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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..errors import Cancelled, GAIRError
from ..pipeline.distributed import Shard, init_from_env, shutdown
from .config import PretrainConfig
from .data import EpochSampler, PretrainDataset, make_loader
from .manifest import read_manifest
from .runtime import (
    amp_settings,
    deterministic_algorithms,
    example_batch,
    freeze_unused,
    make_optimizer,
    param_groups,
    schedule,
)
from .state import (
    RunLog,
    check_fresh_folder,
    find_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .weights import StartReport, build_start, build_teacher


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
    evaluations: dict = field(default_factory=dict)  # [eval]: task -> report folder


def run(cfg: PretrainConfig, resume: str | bool = False, progress: Callable[[float], None] | None = None,
        cancel: Callable[[], bool] | None = None, overwrite: bool = False) -> TrainResult:
    """Train as configured; rank 0 writes out_dir/{log.csv, checkpoints/, bundle/}. See the module doc.

    resume: True (the newest intact checkpoint in out_dir, if any) or a checkpoint path; it must be of this run
    (same config but for paths, logging and devices). Without resume, out_dir must be empty or absent, unless
    overwrite (which removes the checkpoints there first). cancel() -> True stops with engine.Cancelled, leaving
    the checkpoints written so far (resumable) and no bundle.
    """
    shard = init_from_env(cfg.train.device)  # under torchrun, this rank's device
    alone = "cuda" if cfg.train.device != "cpu" and torch.cuda.is_available() else "cpu"
    device = torch.device(shard.device if shard.world_size > 1 else alone)
    threads = torch.get_num_threads()
    try:
        if not resume:
            check_fresh_folder(cfg.train.out_dir, overwrite)  # every rank checks before any rank writes
        if shard.world_size > 1:
            dist.barrier()
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        with deterministic_algorithms(cfg.train.deterministic):
            session = _Session(cfg, shard, device)
            session.restore(find_checkpoint(resume, cfg.train.out_dir))
            result = session.train(progress, cancel)
        if shard.world_size > 1:
            dist.barrier()  # rank 0 writes the bundle; the others wait, so all leave the group together
        return result
    finally:
        torch.set_num_threads(threads)
        shutdown(shard)


def _objective(cfg: PretrainConfig, model: nn.Module, start: StartReport) -> nn.Module:
    if cfg.objective.name == "csp":
        from .csp import CSPObjective

        return CSPObjective(model, cfg.csp, cfg.objective.query_mode)
    from .objective import GAIRObjective

    return GAIRObjective(model, cfg.objective, build_teacher(cfg, model), start.queue_filled)


class _Session:
    """Everything one process holds during a run."""

    def __init__(self, cfg: PretrainConfig, shard: Shard, device: torch.device) -> None:
        t = cfg.train
        self.cfg, self.shard, self.device = cfg, shard, device
        self.main = shard.is_main
        self.out_dir = Path(t.out_dir)
        if not cfg.data.manifest:
            raise GAIRError("no manifest: set data.manifest (make one with `python -m engine build-dataset`)")
        self.amp_dtype, use_scaler = amp_settings(t.amp, device)
        self.model, self.start = build_start(cfg)
        self.model.to(device)
        self.samples = read_manifest(cfg.data.manifest)
        dataset = PretrainDataset(self.samples, self.model.config, cfg.data, train=True, seed=t.seed)
        self.sampler = EpochSampler(len(dataset), shard.world_size, shard.rank, seed=t.seed)
        self.loader = make_loader(dataset, self.sampler, t.batch_size, cfg.data.num_workers, device.type == "cuda")
        self.accum = cfg.optim.accum_steps
        self.steps_per_epoch = len(self.loader) // self.accum
        if self.steps_per_epoch < 1:
            raise GAIRError(f"one epoch gives {len(self.loader)} batches, fewer than optim.accum_steps = {self.accum}")
        self.total = t.max_steps or t.epochs * self.steps_per_epoch
        self.eff_batch = t.batch_size * self.accum * shard.world_size
        self.lr = cfg.optim.lr or cfg.optim.base_lr * self.eff_batch / 256

        self.objective = _objective(cfg, self.model, self.start).to(device)
        self.frozen = freeze_unused(self.objective, example_batch(self.model, device))
        self.trainable = [p for p in self.objective.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(cfg.optim, param_groups(self.objective, cfg.optim.weight_decay), self.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, schedule(cfg.optim, self.steps_per_epoch, self.total, self.lr))
        self.scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
        self.step, self.resumed_from, self.resumed_step = 0, None, None

    def restore(self, path: Path | None) -> None:
        """Load a checkpoint (every piece of state), or seed this rank's generators for a fresh run."""
        t = self.cfg.train
        if path is None:
            torch.manual_seed(t.seed + 1000 * self.shard.rank)
            np.random.seed(t.seed + self.shard.rank)
            return
        payload = load_checkpoint(path, self.cfg.to_dict())  # refuses another run's checkpoint, naming why
        self.model.load_state_dict(payload["model"])
        self.objective.load_state_dict({**self.objective.state_dict(), **payload["objective"]})
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        self.step = self.resumed_step = payload["step"]
        self.resumed_from = path
        if payload["world_size"] == self.shard.world_size:
            set_rng_state(payload["rng"][self.shard.rank])
        elif self.main:
            print(f"note: resumed on {self.shard.world_size} processes from a {payload['world_size']}-process run: "
                  "the data order and random draws differ from an uninterrupted run")

    def announce(self) -> None:
        t = self.cfg.train
        (self.out_dir / "pretrain_config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2, default=str))
        print(f"start: {self.start.source}; {len(self.samples)} samples, {self.shard.world_size} process(es) x batch "
              f"{t.batch_size} x accum {self.accum}; lr {self.lr:.3g}; {self.total} steps "
              f"({self.steps_per_epoch}/epoch); device {self.device}")
        for note in self.start.notes:
            print(note)
        if self.frozen:
            print(f"frozen (unused by the objective): {len(self.frozen)} tensors, e.g. {', '.join(self.frozen[:4])}")
        if self.resumed_from is not None:
            print(f"resumed from {self.resumed_from} at step {self.step}")

    def batches(self):
        """Micro-batches from the current position on, across epochs (the sampler skips what was consumed)."""
        epoch, skip = divmod(self.step * self.accum, len(self.loader))
        self.sampler.set_epoch(epoch, skip * self.cfg.train.batch_size)
        while True:
            for batch in self.loader:
                yield epoch, batch
            epoch += 1
            self.sampler.set_epoch(epoch)

    def optimizer_step(self, net: nn.Module, forward, batches) -> tuple[int, list[str], list[float]]:
        """One optimizer step over `accum` micro-batches; returns (epoch, loss names, rank-averaged values)."""
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        ddp = isinstance(net, nn.parallel.DistributedDataParallel)
        for a in range(self.accum):
            epoch, batch = next(batches)
            lonlat = batch["lonlat"].to(self.device, non_blocking=True)
            inputs = {"rs": batch["rs"].to(self.device, non_blocking=True),
                      "sv": batch["sv"].to(self.device, non_blocking=True), "rel_xy": batch["rel_xy"], "lonlat": lonlat}
            with net.no_sync() if ddp and a < self.accum - 1 else contextlib.nullcontext():
                with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                    enabled=self.amp_dtype is not None):
                    out = forward(**inputs)
                self.scaler.scale(out["loss"] / self.accum).backward()
            self.objective.after_step(lonlat)
            for key, value in out.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float() / self.accum
        names = list(sums)
        values = torch.stack([sums[k] for k in names])
        if self.shard.world_size > 1:
            dist.all_reduce(values)
            values /= self.shard.world_size
        values = values.cpu().tolist()
        if not all(math.isfinite(v) for v in values):  # same reduced values on every rank: all stop together
            raise GAIRError(f"the loss became non-finite at step {self.step + 1} ({dict(zip(names, values))}); lower "
                            "optim.lr, set optim.clip_grad, or use train.amp = bf16, then --resume from a checkpoint")
        if self.cfg.optim.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.optim.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return epoch, names, values

    def train(self, progress, cancel) -> TrainResult:
        t = self.cfg.train
        net: nn.Module = self.objective
        if self.shard.world_size > 1:
            net = nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        forward = torch.compile(net) if t.compile else net
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.main:
            self.announce()
        bar = log = None
        if self.main and t.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.total, initial=self.step, unit="step", dynamic_ncols=True)
        batches = self.batches()
        last_loss, rate, tick, tick_step = math.nan, 0.0, time.perf_counter(), self.step
        try:
            while self.step < self.total:
                if cancel and cancel():
                    raise Cancelled(f"pretraining cancelled at step {self.step}; --resume continues from the last "
                                    f"checkpoint in {self.out_dir}")
                epoch, names, values = self.optimizer_step(net, forward, batches)
                last_loss = values[0]
                if self.step % t.log_every == 0 or self.step == self.total:
                    now = time.perf_counter()
                    rate = (self.step - tick_step) * self.eff_batch / max(now - tick, 1e-9)
                    tick, tick_step = now, self.step
                    if self.main:
                        if log is None:
                            log = RunLog(self.out_dir, ["step", "epoch", "lr", *names, "samples_per_s"],
                                         self.resumed_step, t.tensorboard)
                        log.write({"step": self.step, "epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"],
                                   **dict(zip(names, values)), "samples_per_s": rate})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last_loss:.4f}", samples_s=f"{rate:.0f}")
                if self.step % t.checkpoint_every == 0 or self.step == self.total:
                    self.checkpoint()
                if progress and self.main:
                    progress(self.step / self.total)
        finally:
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()
        return self.finish(last_loss, rate)

    def checkpoint(self) -> None:
        """Gather every rank's RNG state; rank 0 writes the checkpoint."""
        states = [None] * self.shard.world_size
        if self.shard.world_size > 1:
            dist.all_gather_object(states, rng_state())
        else:
            states = [rng_state()]
        if not self.main:
            return
        objective_state = {k: v for k, v in self.objective.state_dict().items() if not k.startswith("model.")}
        save_checkpoint({"model": self.model.state_dict(), "objective": objective_state,
                         "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                         "scaler": self.scaler.state_dict(), "rng": states, "world_size": self.shard.world_size,
                         "config": self.cfg.to_dict(), "gair_config": self.model.config.to_dict()},
                        self.out_dir, self.step, self.cfg.train.keep_checkpoints)

    def finish(self, last_loss: float, rate: float) -> TrainResult:
        """Rank 0 writes the bundle (and a CSP grid-cell encoder)."""
        bundle = extra = None
        finish = getattr(self.objective, "finish", None)
        if finish is not None:
            extra = finish(self.out_dir) if self.main else None
        if self.main:
            import engine

            self.model.invalidate_fingerprint()
            bundle = engine.save_bundle(self.model.eval(), self.out_dir / "bundle",
                                        source=f"engine.pretrain ({self.start.source}, {self.step} steps)")
            print(f"bundle: {bundle} (fingerprint {self.model.fingerprint})")
        evaluations = {}
        if self.main and self.cfg.eval.wanted:
            from .evaluation import evaluate_bundle

            evaluations = evaluate_bundle(self.cfg, bundle, extra)
        return TrainResult(self.out_dir, bundle, self.out_dir / "log.csv", self.step, last_loss, rate,
                           self.start.source, extra, evaluations)
