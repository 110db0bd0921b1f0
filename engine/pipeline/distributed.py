"""Sharding crop encoding over torch.distributed ranks (torchrun): gloo on CPU, nccl on GPU.

Every rank walks the same blocks and builds the same global batches of crops; batch j is encoded by rank
j % world_size and its tokens go to rank 0, which blends and writes. Because a batch holds the same crops whichever
rank encodes it, the output equals a single-process run's.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..errors import GAIRError

DEVICES = ("auto", "cuda", "cpu")


@dataclass(frozen=True)
class Shard:
    """This process's place among the ranks; rank 0 writes the output."""

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"  # this rank's device under torchrun (nccl needs CUDA tensors); "cpu" when alone
    owns_group: bool = False  # init_from_env started the process group, so shutdown() ends it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: str = "auto") -> Shard:
    """Join the process group that torchrun describes in RANK/WORLD_SIZE/LOCAL_RANK; a no-op when run alone.

    The one distributed setup of sharded embedding and pretraining. device: "auto" (nccl on this rank's GPU when
    CUDA is there, else gloo on CPU), "cuda" (an error without CUDA) or "cpu" (gloo); GAIR_DIST_BACKEND=gloo also
    forces CPU tensors. A group someone else started is joined as it is.
    """
    if device not in DEVICES:
        raise GAIRError(f"device must be one of {', '.join(DEVICES)}, got {device!r} (torchrun picks the GPU per rank)")
    alone = int(os.environ.get("WORLD_SIZE", "1")) <= 1
    if alone and device != "cuda":
        return Shard()  # without importing torch (the ONNX runtime needs none)
    import torch
    import torch.distributed as dist

    if device == "cuda" and not torch.cuda.is_available():
        raise GAIRError("device cuda was asked for but CUDA is not available; use auto or cpu")
    if alone:
        return Shard()
    use_cuda = (torch.cuda.is_available() and device != "cpu" and os.environ.get("GAIR_DIST_BACKEND", "") != "gloo")
    owns = not dist.is_initialized()
    if owns:
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
    shard = current_shard()
    return Shard(shard.rank, shard.world_size, shard.device, owns)


_ALONE: list[bool] = []  # set by alone(): this rank works by itself inside the process group


@contextmanager
def alone() -> Iterator[None]:
    """current_shard() is a single process inside this block: a rank embeds a whole input of its own (many-input
    runs shard inputs, not crops), with no collective calls the other ranks would have to join."""
    _ALONE.append(True)
    try:
        yield
    finally:
        _ALONE.pop()


def current_shard() -> Shard:
    """The active process group's shard, or a single-process shard (without importing torch when unused)."""
    if _ALONE:
        return Shard()
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return Shard()
    import torch

    nccl = dist.get_backend() == "nccl"
    device = f"cuda:{torch.cuda.current_device()}" if nccl else "cpu"
    return Shard(dist.get_rank(), dist.get_world_size(), device)


def barrier(shard: Shard) -> None:
    if shard.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def shutdown(shard: Shard) -> None:
    """End the process group if init_from_env started it."""
    if shard.owns_group:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def gather_batches(shard: Shard, sizes: list[int], token_shape: tuple[int, int],
                   encode: Callable[[int], np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
    """Encode batch j (of sizes[j] crops) on rank j % world; rank 0 yields (j, tokens) in order, others nothing.

    `encode(j)` returns float32 (sizes[j], *token_shape). Non-main ranks send without waiting for rank 0.
    """
    if shard.world_size == 1:
        for j in range(len(sizes)):
            yield j, encode(j)
        return
    import torch
    import torch.distributed as dist

    pending = []
    for j, size in enumerate(sizes):
        owner = j % shard.world_size
        if shard.is_main:
            if owner == 0:
                yield j, encode(j)
            else:
                buf = torch.empty((size, *token_shape), dtype=torch.float32, device=shard.device)
                dist.recv(buf, src=owner)
                yield j, buf.cpu().numpy()
        elif owner == shard.rank:
            tensor = torch.from_numpy(np.ascontiguousarray(encode(j), dtype=np.float32)).to(shard.device)
            pending.append((dist.isend(tensor, dst=0), tensor))
    for work, _ in pending:
        work.wait()
