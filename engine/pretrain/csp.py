"""CSP (Mai et al. 2023, "Contrastive Spatial Pre-Training"): a location encoder trained against frozen image features.

Three terms, each with its own weight and temperature: in-batch image negatives, random-location negatives drawn
uniformly on the sphere, and SimCSE (two dropout passes of the same location are positives). Two encoders:
"rff" trains the model's own GeoCLIP-style encoder (dropout is added after its capsule ReLUs while training, so
the bundle's architecture does not change); "gridcell" is a multi-scale sinusoidal (Space2Vec "theory") encoder,
saved beside the bundle as `gridcell_location_encoder.safetensors` + `.json`.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GAIRError
from ..io.files import atomic_path
from .config import CSPSection
from .losses import csp_inbatch, csp_random_locations, csp_simcse, uniform_sphere_lonlat
from .objective import localized


@dataclass(frozen=True)
class GridCellConfig:
    embed_dim: int
    min_radius_deg: float = 1e-3
    max_radius_deg: float = 360.0
    scales: int = 32
    hidden: int = 512
    layers: int = 2
    dropout: float = 0.1


class GridCellEncoder(nn.Module):
    """[lon, lat] degrees -> sin/cos of projections on 3 unit vectors 120 degrees apart at geometric wavelengths
    from min_radius to max_radius -> MLP with dropout -> embed_dim."""

    def __init__(self, cfg: GridCellConfig) -> None:
        super().__init__()
        if not 0 < cfg.min_radius_deg < cfg.max_radius_deg:
            raise GAIRError(f"grid-cell radii must satisfy 0 < min < max, got {cfg.min_radius_deg}, "
                            f"{cfg.max_radius_deg}")
        self.config = cfg
        angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=torch.float64)
        directions = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)  # (3, 2)
        ratio = cfg.max_radius_deg / cfg.min_radius_deg
        steps = torch.arange(cfg.scales, dtype=torch.float64) / max(cfg.scales - 1, 1)
        wavelengths = cfg.min_radius_deg * ratio**steps  # (S,)
        frequencies = 2 * math.pi * directions[None] / wavelengths[:, None, None]
        self.register_buffer("frequencies", frequencies.reshape(-1, 2).float())
        layers: list[nn.Module] = []
        width = 2 * self.frequencies.shape[0]
        for _ in range(cfg.layers):
            layers += [nn.Linear(width, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = cfg.hidden
        layers.append(nn.Linear(width, cfg.embed_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, lonlat: torch.Tensor) -> torch.Tensor:
        phase = lonlat.to(self.frequencies.dtype) @ self.frequencies.T
        return self.mlp(torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1))


def save_gridcell(encoder: GridCellEncoder, out_dir: str | Path) -> Path:
    """`gridcell_location_encoder.safetensors` + `.json` in out_dir, each written atomically."""
    from safetensors.torch import save_file

    weights = Path(out_dir) / "gridcell_location_encoder.safetensors"
    with atomic_path(weights) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}, str(tmp))
    with atomic_path(weights.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(asdict(encoder.config), indent=2))
    return weights


def load_gridcell(path: str | Path) -> GridCellEncoder:
    """Load a grid-cell encoder saved by `save_gridcell` (give the .safetensors file or its folder)."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "gridcell_location_encoder.safetensors"
    meta = path.with_suffix(".json")
    if not path.is_file() or not meta.is_file():
        raise GAIRError(f"grid-cell encoder {path} (and its .json) not found; train one with objective.name = \"csp\"")
    encoder = GridCellEncoder(GridCellConfig(**json.loads(meta.read_text())))
    encoder.load_state_dict(load_file(str(path)))
    return encoder.eval()


class _CapsuleDropout:
    """Dropout after each ReLU of the model's location capsules (forward hooks; active only in train mode)."""

    def __init__(self, location_encoder: nn.Module, p: float) -> None:
        self.handles = []
        for module in location_encoder.modules():
            if isinstance(module, nn.ReLU):
                self.handles.append(module.register_forward_hook(
                    lambda mod, args, out: F.dropout(out, p, mod.training)))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class CSPObjective(nn.Module):
    """Loss of one batch; only the location encoder (and optionally the image projection) is trainable."""

    def __init__(self, model: nn.Module, cfg: CSPSection, query_mode: str = "nili") -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.query_mode = query_mode
        d = model.config.embed_dim
        for p in model.parameters():
            p.requires_grad_(False)
        self.gridcell: GridCellEncoder | None = None
        self._dropout = None
        if cfg.encoder == "gridcell":
            grid = GridCellConfig(d, cfg.gridcell_min_radius_deg, cfg.gridcell_max_radius_deg, cfg.gridcell_scales,
                                  cfg.gridcell_hidden, cfg.gridcell_layers, cfg.dropout)
            self.gridcell = GridCellEncoder(grid).to(model.device)
        else:
            model.location_encoder.requires_grad_(True)
            for capsule in model.location_encoder.children():  # the Fourier matrices stay fixed, as in GeoCLIP
                capsule.capsule[0].requires_grad_(False)
            self._dropout = _CapsuleDropout(model.location_encoder, cfg.dropout)
        self.image_head: nn.Module | None = None
        if cfg.train_image_projection:
            if cfg.image == "sv":
                model.optical_proj.requires_grad_(True)
            else:
                self.image_head = nn.Linear(d, d).to(model.device)
                nn.init.eye_(self.image_head.weight)
                nn.init.zeros_(self.image_head.bias)

    def encode_location(self, lonlat: torch.Tensor) -> torch.Tensor:
        out = self.gridcell(lonlat) if self.gridcell is not None else self.model.encode_location(lonlat)
        return F.normalize(out.float(), dim=-1)

    def image_features(self, rs: torch.Tensor, sv: torch.Tensor, rel_xy: torch.Tensor) -> torch.Tensor:
        m = self.model
        with torch.no_grad():
            if self.cfg.image == "sv":
                feat = m.encode_sv(sv)
            else:
                feat = localized(m, m.rs_tokens(rs), rel_xy, self.query_mode)
        if self.cfg.image == "sv":
            feat = m.optical_proj(feat)
        elif self.image_head is not None:
            feat = self.image_head(feat)
        return F.normalize(feat.float(), dim=-1)

    def forward(self, rs: torch.Tensor, sv: torch.Tensor, rel_xy: torch.Tensor,
                lonlat: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        img = self.image_features(rs, sv, rel_xy)
        b, k = lonlat.shape[0], cfg.randloc_count
        random = uniform_sphere_lonlat(b * k, device=lonlat.device) if cfg.randloc_weight > 0 else lonlat[:0]
        both = self.encode_location(torch.cat([lonlat, random]))
        loc, rand = both[:b], both[b:].reshape(k, b, -1) if cfg.randloc_weight > 0 else None
        parts = {"inbatch": csp_inbatch(loc, img, cfg.inbatch_temperature, cfg.symmetric)}
        total = cfg.inbatch_weight * parts["inbatch"]
        if rand is not None:
            parts["randloc"] = csp_random_locations(loc, rand, img, cfg.randloc_temperature)
            total = total + cfg.randloc_weight * parts["randloc"]
        if cfg.simcse_weight > 0:
            parts["simcse"] = csp_simcse(loc, self.encode_location(lonlat), cfg.simcse_temperature)
            total = total + cfg.simcse_weight * parts["simcse"]
        return {"loss": total, **parts}

    def after_step(self, lonlat: torch.Tensor) -> None:
        """Nothing to update between steps (no queue)."""

    def finish(self, out_dir: Path) -> Path | None:
        """Remove the training-only dropout hooks; save the grid-cell encoder. Returns its path, if any."""
        if self._dropout is not None:
            self._dropout.remove()
        return save_gridcell(self.gridcell, out_dir) if self.gridcell is not None else None
