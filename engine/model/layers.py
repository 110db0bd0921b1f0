"""Pre-norm transformer blocks whose parameter names match the official GAIR checkpoint.

Attention runs through `F.scaled_dot_product_attention`; the RS encoder passes its 2-D ALiBi bias as an additive mask.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, d = t.shape
    return t.view(b, n, heads, d // heads).transpose(1, 2)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


class FeedForward(nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear; `net` indices follow the checkpoint (CROMA 0/3, query 0/2)."""

    def __init__(self, dim: int, hidden: int, eps: float, dropout_slot: bool) -> None:
        super().__init__()
        layers = [nn.Linear(dim, hidden), nn.GELU()]
        if dropout_slot:  # CROMA keeps an (inactive) Dropout at index 2, so the second Linear is net.3
            layers.append(nn.Dropout(0.0))
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)
        self.input_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.input_norm(x))


class BiasedSelfAttention(nn.Module):
    """CROMA attention: bias-free fused qkv, additive ALiBi bias on the logits."""

    def __init__(self, dim: int, heads: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.input_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q, k, v = (split_heads(t, self.heads) for t in self.to_qkv(self.input_norm(x)).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.to_out(merge_heads(out))


class QueryAttention(nn.Module):
    """The reference query transformer's attention: position codes are added after attention, before `out`."""

    def __init__(self, dim: int, heads: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.heads = heads
        self.create_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.out = nn.Linear(dim, dim)
        self.input_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        q, k, v = (split_heads(t, self.heads) for t in self.create_qkv(self.input_norm(x)).chunk(3, dim=-1))
        return self.out(merge_heads(F.scaled_dot_product_attention(q, k, v)) + pos)


class RSTransformer(nn.Module):
    """CROMA's `BaseTransformer`: `layers.i.0` attention, `layers.i.1` feed-forward, no final norm."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: int, eps: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([BiasedSelfAttention(dim, heads, eps), FeedForward(dim, dim * mlp_ratio, eps, True)])
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        for attn, ffn in self.layers:
            x = attn(x, bias) + x
            x = ffn(x) + x
        return x


class QueryTransformer(nn.Module):
    """The reference's 2-layer `nerf_fn`: a learned query token attends to the crop's tokens, then `norm_out`."""

    def __init__(self, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([QueryAttention(dim, heads), FeedForward(dim, dim * 4, 1e-5, False)]) for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for attn, ffn in self.layers:
            x = attn(x, pos) + x
            x = ffn(x) + x
        return self.norm_out(x)


def alibi_slopes(heads: int) -> list[float]:
    """ALiBi head slopes (geometric from 2^(-8/n)); non-powers of two interleave the next power's slopes."""
    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(heads).is_integer():
        return power_of_two(heads)
    lower = 2 ** math.floor(math.log2(heads))
    return power_of_two(lower) + alibi_slopes(2 * lower)[0::2][: heads - lower]


def alibi_2d(heads: int, grid: int) -> torch.Tensor:
    """(1, heads, grid^2, grid^2) bias: minus slope times the Euclidean distance between patch positions."""
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    pts = torch.stack([rows.flatten(), cols.flatten()], dim=1).double()
    dist = torch.cdist(pts, pts)
    slopes = torch.tensor(alibi_slopes(heads), dtype=torch.float64)
    return (-slopes[:, None, None] * dist[None]).unsqueeze(0).float()


def sincos_1d(dim: int, pos: torch.Tensor, omega_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """MAE-style 1-D sin-cos code: [sin(pos*w), cos(pos*w)], w = 10000^(-k/(dim/2)).

    The reference builds the query point's frequencies in float32 (`omega_dtype`), its patch grid's in float64.
    """
    omega = torch.arange(dim // 2, dtype=omega_dtype, device=pos.device)
    omega = (1.0 / 10000 ** (omega / (dim / 2.0))).to(torch.float64)
    out = pos.reshape(-1, 1).to(torch.float64) * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d_grid(dim: int, grid: int) -> torch.Tensor:
    """(grid^2, dim) fixed position codes of the patch grid: first half encodes the column, second the row."""
    steps = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(steps, steps, indexing="ij")
    return torch.cat([sincos_1d(dim // 2, cols.flatten()), sincos_1d(dim // 2, rows.flatten())], dim=1)
