"""The GAIR pretraining objective as one nn.Module, so DDP and torch.compile see the whole step.

r = localized RS embedding at the photo point (unprojected), s = optical_proj(SV pooler), l = location embedding
(unprojected), all L2-normalised:
    total = (w_rs_sv * (CE(s->r) + CE(r->s)) + w_sv_loc * L(s, l) + w_rs_loc * L(r, l)) / 2  [+ distillation]
L(., l) contrasts each embedding with its own location against a FIFO queue of raw [lon, lat] of past batches
(from all ranks), re-encoded every step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ObjectiveSection
from .losses import distill_loss, gather_ranks, info_nce, location_loss


class LocationQueue(nn.Module):
    """FIFO of raw [lon, lat] kept in the model's `queue_for_location` (2, Q) / `queue_ptr_location` buffers.

    The `filled` buffer counts valid entries; the rest are masked out of the loss, so a fresh queue never
    contrasts against placeholder values, and shapes stay fixed (no recompiles under torch.compile).
    """

    def __init__(self, model: nn.Module, filled: int = 0) -> None:
        super().__init__()
        self._model = (model,)  # the model is the objective's submodule; a tuple keeps it out of this state_dict
        self.register_buffer("filled", torch.tensor(filled, dtype=torch.long))

    @property
    def size(self) -> int:
        return self._model[0].queue_for_location.shape[1]

    def reset(self) -> None:
        self._model[0].queue_for_location.zero_()
        self._model[0].queue_ptr_location.zero_()
        self.filled.zero_()

    def lonlat(self) -> torch.Tensor:
        """(Q, 2) queue entries, valid or not (see `valid`)."""
        return self._model[0].queue_for_location.T

    def valid(self) -> torch.Tensor:
        """(Q,) True where the entry holds a past location."""
        return torch.arange(self.size, device=self.filled.device) < self.filled

    @torch.no_grad()
    def push(self, lonlat: torch.Tensor) -> None:
        """Enqueue (N, 2) locations at the pointer, wrapping around; keeps the newest Q when N > Q."""
        model = self._model[0]
        q = model.queue_for_location
        lonlat = lonlat[-self.size:].to(q.dtype)
        n, ptr = lonlat.shape[0], int(model.queue_ptr_location.item())
        first = min(n, self.size - ptr)
        q[:, ptr:ptr + first] = lonlat[:first].T
        if n > first:
            q[:, : n - first] = lonlat[first:].T
        model.queue_ptr_location[0] = (ptr + n) % self.size
        self.filled.add_(n).clamp_(max=self.size)


def localized(model: nn.Module, tokens: torch.Tensor, rel_xy: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, D) embedding of each crop at its query point; "mean" is the no-localization ablation."""
    if mode == "mean":
        return tokens.mean(dim=1)
    return model.query_tokens(tokens, rel_xy[:, None, :], mode)[:, 0]


class GAIRObjective(nn.Module):
    def __init__(self, model: nn.Module, cfg: ObjectiveSection, teacher: nn.Module | None = None,
                 queue_filled: int = 0) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self._teacher = (teacher,)  # a tuple keeps the frozen teacher out of parameters(), DDP and state_dict
        self.queue = LocationQueue(model, queue_filled)

    def forward(self, rs: torch.Tensor, sv: torch.Tensor, rel_xy: torch.Tensor,
                lonlat: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg, m = self.cfg, self.model
        tokens = m.rs_tokens(rs)
        r = F.normalize(localized(m, tokens, rel_xy, cfg.query_mode).float(), dim=-1)
        pooled = m.encode_sv(sv)
        s = F.normalize(m.optical_proj(pooled).float(), dim=-1)
        past = self.queue.lonlat() if cfg.loc_negatives != "batch" else lonlat[:0]
        locations = m.encode_location(torch.cat([lonlat, past.to(lonlat.dtype)]))
        locations = F.normalize(locations.float(), dim=-1)
        loc, queue = locations[: lonlat.shape[0]], locations[lonlat.shape[0]:]
        valid = self.queue.valid() if cfg.loc_negatives != "batch" else None
        s2r, r2s = info_nce(s, r, cfg.rs_sv_temperature, cfg.gather_negatives)
        sv_loc = location_loss(s, loc, queue, cfg.loc_temperature, cfg.loc_negatives, valid)
        rs_loc = location_loss(r, loc, queue, cfg.loc_temperature, cfg.loc_negatives, valid)
        total = (cfg.rs_sv_weight * (s2r + r2s) + cfg.sv_loc_weight * sv_loc + cfg.rs_loc_weight * rs_loc) / 2
        parts = {"s2r": s2r, "r2s": r2s, "sv_loc": sv_loc, "rs_loc": rs_loc}
        teacher = self._teacher[0]
        if cfg.distill and teacher is not None:
            with torch.no_grad():
                t_sv, t_rs = teacher.encode_sv(sv), teacher.rs_tokens(rs).mean(dim=1)
            distill = distill_loss(pooled, t_sv) + distill_loss(tokens.mean(dim=1), t_rs)
            total = total + cfg.distill_weight * distill
            parts["distill"] = distill
        return {"loss": total, **parts}

    def after_step(self, lonlat: torch.Tensor) -> None:
        """Enqueue this step's locations from every rank (same order everywhere, so all queues agree)."""
        self.queue.push(gather_ranks(lonlat.to(self.model.queue_for_location.device)).detach())
