"""Contrastive losses on plain tensors: InfoNCE, the location-queue loss, distillation, and the CSP terms.

Inputs are L2-normalised embeddings unless said otherwise. Cross-rank gathers keep gradients for the local part
(one all_reduce in the backward), so in-batch negatives can span every GPU.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherRanks(torch.autograd.Function):
    """all_gather whose backward all-reduces the gathered gradient and keeps this rank's slice: the sum over ranks
    of every loss that used it. One all_reduce works on gloo and NCCL alike (torch.distributed.nn's gloo path goes
    through all_to_all, which left gloo threads that aborted some processes at exit)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start:start + ctx.rows]


def gather_ranks(x: torch.Tensor) -> torch.Tensor:
    """x from every rank concatenated in rank order (x itself when alone). Gradients flow back to each rank's own
    slice, summed over the ranks whose losses used it. Every rank must pass the same number of rows."""
    if not distributed():
        return x
    return _GatherRanks.apply(x)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float,
             gather: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE(a -> b), CE(b -> a)) with in-batch negatives; with `gather`, the negatives come from every rank."""
    if gather and distributed():
        a_all, b_all = gather_ranks(a), gather_ranks(b)
        offset = dist.get_rank() * a.shape[0]
    else:
        a_all, b_all, offset = a, b, 0
    target = torch.arange(a.shape[0], device=a.device) + offset
    scale = 1.0 / temperature
    return F.cross_entropy(a @ b_all.T * scale, target), F.cross_entropy(b @ a_all.T * scale, target)


def location_loss(x: torch.Tensor, loc: torch.Tensor, queue: torch.Tensor | None, temperature: float,
                  negatives: str = "queue", valid: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of each embedding x_i against its location loc_i.

    negatives: "queue" -> [loc_i, queue] (the reference), "batch" -> the batch's locations, "batch+queue" -> both
    (GeoCLIP). queue: (Q, D) embeddings of past locations, or None; valid: (Q,) mask of the queue entries to use.
    """
    def queue_logits() -> torch.Tensor:
        logits = x @ queue.T
        return logits if valid is None else logits.masked_fill(~valid, float("-inf"))

    has_queue = queue is not None and queue.shape[0] > 0
    if negatives == "queue":
        pos = (x * loc).sum(dim=-1, keepdim=True)
        logits = torch.cat([pos, queue_logits()], dim=1) if has_queue else pos
        target = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    elif negatives in ("batch", "batch+queue"):
        logits = x @ loc.T
        if negatives == "batch+queue" and has_queue:
            logits = torch.cat([logits, queue_logits()], dim=1)
        target = torch.arange(x.shape[0], device=x.device)
    else:
        raise ValueError(f"unknown location negatives {negatives!r}")
    return F.cross_entropy(logits / temperature, target)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """-mean cos(student, teacher): keeps a fine-tuned encoder near its frozen starting point."""
    return -F.cosine_similarity(student.float(), teacher.float(), dim=-1).mean()


def uniform_sphere_lonlat(n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """(n, 2) [lon, lat] degrees uniform on the sphere (uniform in lon and in sin(lat))."""
    u = torch.rand(n, 2, generator=generator, device=device, dtype=torch.float64)
    lon = u[:, 0] * 360.0 - 180.0
    lat = torch.rad2deg(torch.asin(2.0 * u[:, 1] - 1.0))
    return torch.stack([lon, lat], dim=1).float()


def sphericalold_lonlat(n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """(n, 2) [lon, lat] degrees from CSP's `sphericalold` sampler (the one its ICCV paper used): a point of the unit
    sphere's x-y disc in normalised (lon/180, lat/90) coordinates, i.e. radius sqrt(1 - u^2) for u uniform in
    [-1, 1] at a uniform angle. It never reaches the corners (lon 180 and lat 90 together) and favours the equator."""
    u = torch.rand(n, 2, generator=generator, device=device, dtype=torch.float64)
    radius = torch.sqrt(1.0 - (2.0 * u[:, 0] - 1.0) ** 2)
    angle = 2.0 * math.pi * u[:, 1]
    return torch.stack([180.0 * radius * torch.cos(angle), 90.0 * radius * torch.sin(angle)], dim=1).float()


def csp_inbatch(loc: torch.Tensor, img: torch.Tensor, temperature: float, symmetric: bool = False) -> torch.Tensor:
    """CSP in-batch term: each location against every image of the batch (and back when symmetric)."""
    logits = loc @ img.T / temperature
    target = torch.arange(loc.shape[0], device=loc.device)
    loss = F.cross_entropy(logits, target)
    return loss + F.cross_entropy(logits.T, target) if symmetric else loss


def csp_random_locations(loc: torch.Tensor, random_loc: torch.Tensor, img: torch.Tensor,
                         temperature: float) -> torch.Tensor:
    """CSP sampled-negative term: each image's own location against K random locations (random_loc (K, B, D))."""
    pos = (loc * img).sum(dim=-1, keepdim=True)
    neg = torch.einsum("kbd,bd->bk", random_loc, img)
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(loc.shape[0], dtype=torch.long, device=loc.device))


def csp_simcse(loc: torch.Tensor, loc_again: torch.Tensor, temperature: float) -> torch.Tensor:
    """CSP SimCSE term: two dropout passes of the same locations are positives, the rest of the batch negatives."""
    logits = loc @ loc_again.T / temperature
    return F.cross_entropy(logits, torch.arange(loc.shape[0], device=loc.device))
