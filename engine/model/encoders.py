"""The three GAIR encoders: Sentinel-2 (CROMA ViT + 2-D ALiBi), street view (ViT-B/16), location (RFF capsules)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GAIRConfig
from .layers import RSTransformer, alibi_2d


class S2Encoder(nn.Module):
    """Patchify (c i j order, as CROMA) -> linear -> transformer with a fixed ALiBi bias."""

    def __init__(self, cfg: GAIRConfig) -> None:
        super().__init__()
        self.patch = cfg.rs_patch_size
        self.linear_input = nn.Linear(cfg.rs_channels * cfg.rs_patch_size**2, cfg.embed_dim)
        self.transformer = RSTransformer(cfg.embed_dim, cfg.rs_depth, cfg.rs_heads, cfg.rs_mlp_ratio,
                                         cfg.rs_layer_norm_eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.patch
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)
        return self.transformer(self.linear_input(x), bias)


class RSEncoder(nn.Module):
    """`rs_encoder`: tokens come from `s2_encoder`; `layer_norm` and `head` are kept for checkpoint parity only."""

    def __init__(self, cfg: GAIRConfig) -> None:
        super().__init__()
        self.s2_encoder = S2Encoder(cfg)
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.head = nn.Linear(cfg.embed_dim, cfg.rs_head_classes)
        self.register_buffer("attn_bias", alibi_2d(cfg.rs_heads, cfg.rs_grid), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.s2_encoder(x, self.attn_bias)


class PatchEmbeddings(nn.Module):
    def __init__(self, cfg: GAIRConfig) -> None:
        super().__init__()
        self.projection = nn.Conv2d(3, cfg.embed_dim, cfg.sv_patch_size, stride=cfg.sv_patch_size)


class SVEmbeddings(nn.Module):
    def __init__(self, cfg: GAIRConfig) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.position_embeddings = nn.Parameter(torch.zeros(1, cfg.sv_grid**2 + 1, cfg.embed_dim))
        self.patch_embeddings = PatchEmbeddings(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embeddings.projection(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.position_embeddings


class _Dense(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)


class SVSelfAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)


class SVAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attention = SVSelfAttention(dim)
        self.output = _Dense(dim, dim)


class SVLayer(nn.Module):
    """ViT block (pre-norm), named like the Hugging Face ViT checkpoint the reference stores."""

    def __init__(self, cfg: GAIRConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.heads = cfg.sv_heads
        self.attention = SVAttention(d)
        self.intermediate = _Dense(d, cfg.sv_mlp_dim)
        self.output = _Dense(cfg.sv_mlp_dim, d)
        self.layernorm_before = nn.LayerNorm(d, eps=cfg.sv_layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(d, eps=cfg.sv_layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layernorm_before(x)
        att = self.attention.attention
        b, n, d = h.shape
        q, k, v = (lin(h).view(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for lin in (att.query, att.key, att.value))
        ctx = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = self.attention.output.dense(ctx) + x
        return self.output.dense(F.gelu(self.intermediate.dense(self.layernorm_after(x)))) + x


class SVEncoderLayers(nn.Module):
    def __init__(self, cfg: GAIRConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(SVLayer(cfg) for _ in range(cfg.sv_depth))


class SVEncoder(nn.Module):
    """ViT-B/16 with CLS token; returns the pooler output tanh(dense(LN(seq)[CLS]))."""

    def __init__(self, cfg: GAIRConfig) -> None:
        super().__init__()
        self.embeddings = SVEmbeddings(cfg)
        self.encoder = SVEncoderLayers(cfg)
        self.layernorm = nn.LayerNorm(cfg.embed_dim, eps=cfg.sv_layer_norm_eps)
        self.pooler = _Dense(cfg.embed_dim, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embeddings(x)
        for layer in self.encoder.layer:
            h = layer(h)
        return torch.tanh(self.pooler.dense(self.layernorm(h)[:, 0]))


# Equal Earth projection constants (Šavrič, Patterson & Jenny 2018), output scaled as GeoCLIP does.
_A1, _A2, _A3, _A4, _SF = 1.340264, -0.081106, 0.000893, 0.003796, 66.50336
# The reference builds sqrt(3) as a float32 tensor; its rounded value is part of the function.
_SQRT3 = float(torch.tensor(3.0).sqrt())


def equal_earth(lonlat: torch.Tensor) -> torch.Tensor:
    """[lon, lat] degrees -> Equal Earth (x, y) scaled by SF/180, as GeoCLIP's location encoder expects."""
    lon = torch.deg2rad(lonlat[:, 0])
    theta = torch.asin(_SQRT3 / 2 * torch.sin(torch.deg2rad(lonlat[:, 1])))
    denom = 3 * (9 * _A4 * theta**8 + 7 * _A3 * theta**6 + 3 * _A2 * theta**2 + _A1)
    x = 2 * _SQRT3 * lon * torch.cos(theta) / denom
    y = _A4 * theta**9 + _A3 * theta**7 + _A2 * theta**3 + _A1 * theta
    return torch.stack((x, y), dim=1) * _SF / 180


class FourierFeatures(nn.Module):
    """Random Fourier features [cos(2 pi v b^T), sin(2 pi v b^T)] with a fixed Gaussian matrix `b`."""

    def __init__(self, sigma: float, frequencies: int) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.randn(frequencies, 2) * sigma, requires_grad=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        # Phases reach ~1e4 rad at sigma 256: float32 would lose ~1e-4 of the output, so they are taken in float64.
        vp = 2 * math.pi * v.double() @ self.b.double().T
        return torch.cat((torch.cos(vp), torch.sin(vp)), dim=-1).to(self.b.dtype)


class LocationCapsule(nn.Module):
    def __init__(self, sigma: float, cfg: GAIRConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [FourierFeatures(sigma, cfg.loc_frequencies)]
        width = 2 * cfg.loc_frequencies
        for _ in range(cfg.loc_layers):
            layers += [nn.Linear(width, cfg.loc_hidden), nn.ReLU()]
            width = cfg.loc_hidden
        self.capsule = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(cfg.loc_hidden, cfg.embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.capsule(x))


class LocationEncoder(nn.Module):
    """Sum of capsules at several Fourier scales (GeoCLIP), on the Equal Earth projection of [lon, lat]."""

    def __init__(self, cfg: GAIRConfig) -> None:
        super().__init__()
        self.n = len(cfg.loc_sigmas)
        for i, sigma in enumerate(cfg.loc_sigmas):
            self.add_module(f"LocEnc{i}", LocationCapsule(sigma, cfg))

    def forward(self, lonlat: torch.Tensor) -> torch.Tensor:
        xy = equal_earth(lonlat.double())
        return sum(getattr(self, f"LocEnc{i}")(xy) for i in range(self.n))
