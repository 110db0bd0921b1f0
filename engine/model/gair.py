"""GAIRModel: the three encoders, the point queries and the dense field behind one config-driven class.

Parameter names follow the official checkpoint so it loads without renaming. Methods take torch tensors (autograd
kept, for pretraining) or numpy arrays (inference: no grad, numpy out), so pipelines can treat the torch and ONNX
backends alike.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import math
import warnings

import numpy as np
import torch
from torch import nn

from ..config import GAIRConfig
from ..runtime.grid import dense_plan, pixel_centres, points_plan, relative_positions
from ..runtime.protocol import (
    check_lonlat,
    check_positions,
    check_rs_input,
    check_sv_input,
    check_tokens,
)
from .encoders import LocationEncoder, RSEncoder, SVEncoder
from .layers import QueryTransformer, sincos_1d, sincos_2d_grid
from .query import cell_grid, nili_grid, nili_points, sample_dense, sample_points

# Above this many points per crop, projecting all cells once beats evaluating imnet four times per point.
_PROJECT_CELLS_FACTOR = 0.25


def array_io(method):
    """Accept numpy or torch; numpy input runs without grad on the model's device/dtype and returns numpy."""

    @functools.wraps(method)
    def wrapper(self: GAIRModel, first, *args, **kwargs):
        if isinstance(first, torch.Tensor):
            return method(self, first, *args, **kwargs)
        with torch.inference_mode():
            tensor = torch.as_tensor(np.asarray(first), device=self.device, dtype=self.dtype)
            out = method(self, tensor, *args, **kwargs)
        return out.detach().cpu().numpy()

    return wrapper


class GAIRModel(nn.Module):
    """The torch backend of engine.runtime.protocol.GAIRModelLike (and the network that pretraining trains)."""

    backend = "torch"

    def __init__(self, config: GAIRConfig | None = None) -> None:
        super().__init__()
        cfg = config or GAIRConfig()
        self.config = cfg
        d = cfg.embed_dim
        self.query_feature = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.rs_patch_pos_encoding = nn.Parameter(sincos_2d_grid(d, cfg.rs_grid).float()[None], requires_grad=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)), requires_grad=False)
        self.register_buffer("queue_for_location", nn.functional.normalize(torch.randn(2, cfg.queue_size), dim=0))
        self.register_buffer("queue_ptr_location", torch.zeros(1, dtype=torch.long))
        self.rs_encoder = RSEncoder(cfg)
        self.sv_encoder = SVEncoder(cfg)
        self.location_encoder = LocationEncoder(cfg)
        self.nerf_fn = QueryTransformer(d, cfg.query_depth, cfg.query_heads)
        self.imnet = nn.Linear(cfg.imnet_in, d)
        self.radar_proj = nn.Linear(d, d)
        self.optical_proj = nn.Linear(d, d)
        self.location_proj = nn.Linear(d, d)
        self._fingerprint: str | None = None
        # Whether `nerf_fn` (the transformer query mode) was ever trained: the authors' forward pass never calls it,
        # so the official checkpoint's copy is untrained; bundles record it (save_bundle / load_bundle).
        self.nerf_fn_trained = False
        self._warned_untrained_query = False

    # ---- identity -------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.imnet.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.imnet.weight.dtype

    @property
    def fingerprint(self) -> str:
        """Short hash of the weights: the identity of the embedding space this model produces.

        blake2b over each state-dict entry's name and float32 C-order bytes (bundles and rasters record the value,
        so the byte stream is fixed); float32 CPU tensors are fed as buffers, without a copy.
        """
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=8)
            for name, tensor in sorted(self.state_dict().items()):
                h.update(name.encode())
                h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().reshape(-1))
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def invalidate_fingerprint(self) -> None:
        """Forget the cached identity; call after changing weights in place (training)."""
        self._fingerprint = None

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._fingerprint = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ---- encoders -------------------------------------------------------------------------------------------
    @array_io
    def rs_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) preprocessed crops -> (B, G*G, D) tokens, row-major, row 0 at the north edge."""
        check_rs_input(x.shape, self.config)
        return self.rs_encoder(x)

    @array_io
    def encode_rs(self, x: torch.Tensor) -> torch.Tensor:
        """Crop embedding: mean of the tokens (no final norm, no head), as the reference."""
        return self.rs_tokens(x).mean(dim=1)

    @array_io
    def encode_sv(self, x: torch.Tensor, aligned: bool = False) -> torch.Tensor:
        """Street-view pooler output; aligned=True applies `optical_proj`, the side the RS-SV loss compared."""
        check_sv_input(x.shape, self.config)
        pooled = self.sv_encoder(x)
        return self.optical_proj(pooled) if aligned else pooled

    @array_io
    def encode_location(self, lonlat: torch.Tensor) -> torch.Tensor:
        """(B, 2) [lon, lat] degrees -> (B, D)."""
        check_lonlat(lonlat.shape)
        return self.location_encoder(lonlat)

    # ---- queries --------------------------------------------------------------------------------------------
    def _positions(self, rel_xy, tokens: torch.Tensor) -> torch.Tensor:
        check_tokens(tokens.shape, self.config)
        rel = torch.as_tensor(rel_xy, dtype=torch.float64, device=tokens.device)
        check_positions(rel.shape, tokens.shape[0])
        return rel

    def _grid(self, tokens: torch.Tensor, mode: str, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if mode == "nili":
            return nili_grid(tokens, weight, bias, self.config.nili_convention)
        return cell_grid(tokens)

    @array_io
    def query_tokens(self, tokens: torch.Tensor, rel_xy, mode: str = "nili") -> torch.Tensor:
        """Embeddings at points of each crop: rel_xy (B, N, 2) in [0, 1], x from west, y from north -> (B, N, D).

        NILI at few points per crop is the reference form (training); at many, the projected-cells kernel.
        """
        rel = self._positions(rel_xy, tokens)
        if mode == "transformer":
            return self._transformer_query(tokens, rel)
        if mode == "nili" and rel.shape[1] <= _PROJECT_CELLS_FACTOR * tokens.shape[1]:
            return nili_points(tokens, rel, self.imnet, self.config.nili_convention)
        plan = points_plan(rel, self.config.rs_grid, mode, self.config.nili_convention)
        return sample_points(self._grid(tokens, mode, self.imnet.weight, self.imnet.bias), plan)

    def _warn_untrained_query(self) -> None:
        """Warn (once per model) that the transformer query mode runs an untrained `nerf_fn`."""
        if self.nerf_fn_trained or self._warned_untrained_query:
            return
        self._warned_untrained_query = True
        message = ("query mode 'transformer' uses nerf_fn, which these weights never trained (the authors' training "
                   "does not call it; the official checkpoint's copy is untrained): its embeddings are not meaningful. "
                   "Use nili (GAIR's query), bilinear or bicubic")
        logging.getLogger(__name__).warning(message)
        warnings.warn(message, UserWarning, stacklevel=4)

    def _transformer_query(self, tokens: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        """The reference's `nerf_fn`: a learned query token with a sin-cos code of the point, one pass per point."""
        self._warn_untrained_query()
        b, n, _ = rel.shape
        g, d = self.config.rs_grid, self.config.embed_dim
        point = rel.reshape(-1, 2) * g
        code = torch.cat([sincos_1d(d // 2, point[:, k], torch.float32) for k in (0, 1)], dim=1).to(tokens.dtype)
        seq = torch.cat([tokens.repeat_interleave(n, dim=0), self.query_feature.expand(b * n, -1, -1)], dim=1)
        pos = torch.cat([self.rs_patch_pos_encoding.to(tokens.dtype).expand(b * n, -1, -1), code[:, None]], dim=1)
        return self.nerf_fn(seq, pos)[:, -1].reshape(b, n, d)

    @array_io
    def query_localized(self, x: torch.Tensor, lonlat, bbox, mode: str = "nili") -> torch.Tensor:
        """Embedding of crop x at [lon, lat] inside bbox [lon_min, lat_max, lon_max, lat_min] -> (B, D) or (B, N, D)."""
        ll = np.asarray(lonlat.detach().cpu() if isinstance(lonlat, torch.Tensor) else lonlat, dtype=np.float64)
        bb = np.asarray(bbox.detach().cpu() if isinstance(bbox, torch.Tensor) else bbox, dtype=np.float64)
        single = ll.ndim == 2
        rel = relative_positions(ll[:, None] if single else ll, bb)
        out = self.query_tokens(self.rs_tokens(x), rel, mode)
        return out[:, 0] if single else out

    @array_io
    def dense_field(self, tokens: torch.Tensor, height: int, width: int, mode: str = "nili") -> torch.Tensor:
        """(B, H, W, D) embeddings at the pixel centres of an HxW grid over each crop."""
        check_tokens(tokens.shape, self.config)
        if mode == "transformer":
            centres = pixel_centres(width, tokens), pixel_centres(height, tokens)
            grid = torch.stack(torch.meshgrid(*centres, indexing="xy"), dim=-1).reshape(1, -1, 2)
            rel = grid.expand(tokens.shape[0], -1, -1)
            return self._transformer_query(tokens, rel).reshape(tokens.shape[0], height, width, -1)
        plan = dense_plan(height, width, self.config.rs_grid, mode, self.config.nili_convention, like=tokens)
        return sample_dense(self._grid(tokens, mode, self.imnet.weight, self.imnet.bias), plan)

