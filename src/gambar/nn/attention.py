"""Attention over image tokens: self-attention and cross-attention to text tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from gambar.nn.norms import group_norm


class Attention(nn.Module):
    """Multi-head attention from queries (B, T, C) to context (B, L, Dc) with an optional
    key mask (B, L), True = attend. Context None means self-attention."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        ctx = x if context is None else context
        q = rearrange(self.to_q(x), "b t (h d) -> b h t d", h=self.heads)
        k, v = rearrange(self.to_kv(ctx), "b l (two h d) -> two b h l d", two=2, h=self.heads)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, L)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(rearrange(out, "b h t d -> b t (h d)"))


class SpatialTransformer(nn.Module):
    """Image tokens attend to themselves (optional) and to the text (Rombach et al. 2022)."""

    def __init__(self, channels: int, heads: int, context_dim: int, self_attention: bool) -> None:
        super().__init__()
        self.norm_in = group_norm(channels)
        self.self_attn = Attention(channels, heads) if self_attention else None
        self.norm1 = nn.LayerNorm(channels) if self_attention else None
        self.norm2 = nn.LayerNorm(channels)
        self.cross_attn = Attention(channels, heads, context_dim)
        self.norm3 = nn.LayerNorm(channels)
        self.ff = nn.Sequential(
            nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels)
        )
        # Zero-init the output so each block starts as the identity (stable early training).
        self.proj_out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W); context: (B, L, D); mask: (B, L) bool
        _, _, h, w = x.shape
        t = rearrange(self.norm_in(x), "b c h w -> b (h w) c")
        if self.self_attn is not None:
            t = t + self.self_attn(self.norm1(t))
        t = t + self.cross_attn(self.norm2(t), context, mask)
        t = t + self.ff(self.norm3(t))
        return x + self.proj_out(rearrange(t, "b (h w) c -> b c h w", h=h, w=w))
