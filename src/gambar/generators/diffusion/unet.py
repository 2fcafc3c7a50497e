"""A text-conditional UNet for pixel-space diffusion.

Ho et al. 2020 UNet with the improvements of Nichol & Dhariwal 2021 (scale-shift norm) and
text conditioning as in Imagen / Stable Diffusion: cross-attention from image tokens to the text's
token states, plus the pooled text vector added to the timestep embedding.
The input is first folded into patches (pixel-unshuffle, Hoogeboom et al. 2023 "simple
diffusion"): at 64 px a 2x2 patch makes every convolution 4x cheaper, which is what lets the
model train and sample on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gambar.config import check_range
from gambar.errors import InvalidInputError
from gambar.nn.attention import SpatialTransformer
from gambar.nn.embeddings import TimestepMLP
from gambar.nn.norms import group_norm
from gambar.nn.resblock import ResBlock

MAX_WIDTH = 1024  # channels of the widest level (base_channels * channel_mults)


@dataclass(frozen=True)
class UNetConfig:
    image_channels: int = 3
    patch_size: int = 2  # pixels folded into channels before the first conv
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 4)
    blocks_per_level: int = 2
    cross_attention_levels: tuple[int, ...] = (1, 2)  # levels whose blocks attend to the text
    self_attention_levels: tuple[int, ...] = (2,)  # levels that also self-attend (cheap ones)
    heads: int = 4
    text_dim: int = 384  # width of the text encoder's token states
    dropout: float = 0.0
    # Conditioning maps concatenated to the noisy image before the first conv (a painted layout,
    # an upsampled low-resolution image); 0 for a text-only model.
    extra_channels: int = 0

    def __post_init__(self) -> None:
        # Upper bounds far above anything a CPU trains; they stop a corrupt config.json from
        # allocating terabytes before its weights are even read.
        # What the sampler draws: RGB pixels (3), or an autoencoder's latent channels.
        check_range("unet.image_channels", self.image_channels, 1, 16)
        check_range("unet.patch_size", self.patch_size, 1, 8)
        check_range("unet.base_channels", self.base_channels, 1, MAX_WIDTH)
        check_range("unet.blocks_per_level", self.blocks_per_level, 1, 8)
        check_range("unet.heads", self.heads, 1, 64)
        check_range("unet.text_dim", self.text_dim, 1, 4096)
        check_range("unet.extra_channels", self.extra_channels, 0, 256)
        if not 0.0 <= self.dropout < 1.0:
            raise InvalidInputError(f"unet.dropout must be in [0, 1), not {self.dropout}")
        if not 1 <= len(self.channel_mults) <= 6:
            raise InvalidInputError(
                f"unet.channel_mults must list 1 to 6 levels, not {list(self.channel_mults)}")
        for i, mult in enumerate(self.channel_mults):
            if not 1 <= mult <= MAX_WIDTH // self.base_channels:
                raise InvalidInputError(
                    f"unet.channel_mults[{i}] must be at least 1 and keep base_channels * it "
                    f"at most {MAX_WIDTH}, not {mult}")
        levels = len(self.channel_mults)
        for name in ("cross_attention_levels", "self_attention_levels"):
            for i, level in enumerate(getattr(self, name)):
                check_range(f"unet.{name}[{i}]", level, 0, levels - 1)
        # Every attending level, and the middle (the last level's width), splits into heads.
        for level in {*self.cross_attention_levels, levels - 1}:
            width = self.base_channels * self.channel_mults[level]
            if width % self.heads:
                raise InvalidInputError(
                    f"unet.heads={self.heads} must divide the width {width} of level {level}")

    @property
    def stride(self) -> int:
        """The image side must be a multiple of this: the patch, then one halving per level."""
        return self.patch_size * 2 ** (len(self.channel_mults) - 1)


PRESETS: dict[str, UNetConfig] = {
    "unet-tiny": UNetConfig(base_channels=16, channel_mults=(1, 2), blocks_per_level=1,
                            cross_attention_levels=(1,), self_attention_levels=()),
    "unet-s": UNetConfig(base_channels=48, channel_mults=(1, 2, 3), blocks_per_level=1),
    "unet-m": UNetConfig(),
}


class _Level(nn.Module):
    """One resolution: ResBlocks, each optionally followed by a SpatialTransformer."""

    def __init__(self, channels: list[tuple[int, int]], emb_dim: int, cfg: UNetConfig,
                 cross: bool, self_attn: bool) -> None:
        super().__init__()
        self.res = nn.ModuleList(ResBlock(i, o, emb_dim, cfg.dropout) for i, o in channels)
        self.attn = nn.ModuleList(
            SpatialTransformer(o, cfg.heads, cfg.text_dim, self_attn) if cross else nn.Identity()
            for _, o in channels
        )


class UNet(nn.Module):
    """x: (B, C, H, W), t: (B,), states: (B, L, D), mask: (B, L), pooled: (B, D) -> (B, C, H, W).

    With `extra_channels`, forward also takes `extra`: (B, extra_channels, H, W) maps."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p, ch0 = cfg.patch_size, cfg.base_channels
        emb_dim = 4 * ch0
        self.time = TimestepMLP(ch0, emb_dim)
        self.text_pool = nn.Linear(cfg.text_dim, emb_dim)
        self.conv_in = nn.Conv2d((cfg.image_channels + cfg.extra_channels) * p * p, ch0, 3,
                                 padding=1)

        widths = [ch0 * m for m in cfg.channel_mults]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, ch = [ch0], ch0
        for lvl, w in enumerate(widths):
            pairs = []
            for _ in range(cfg.blocks_per_level):
                pairs.append((ch, w))
                ch = w
                skips.append(ch)
            self.down.append(self._level(pairs, emb_dim, lvl))
            if lvl < len(widths) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        last = len(widths) - 1
        self.mid = _Level([(ch, ch), (ch, ch)], emb_dim, cfg, cross=True, self_attn=True)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for lvl in reversed(range(len(widths))):
            pairs = []
            for _ in range(cfg.blocks_per_level + 1):
                pairs.append((ch + skips.pop(), widths[lvl]))
                ch = widths[lvl]
            self.up.append(self._level(pairs, emb_dim, lvl))
            if lvl > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        assert not skips and last >= 0
        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, cfg.image_channels * p * p, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # the network starts by predicting zero
        nn.init.zeros_(self.conv_out.bias)

    def _level(self, pairs: list[tuple[int, int]], emb_dim: int, lvl: int) -> _Level:
        cfg = self.cfg
        return _Level(pairs, emb_dim, cfg, cross=lvl in cfg.cross_attention_levels,
                      self_attn=lvl in cfg.self_attention_levels)

    @staticmethod
    def _run(level: _Level, h: torch.Tensor, emb: torch.Tensor, states: torch.Tensor,
             mask: torch.Tensor, skips: list[torch.Tensor] | None, push: bool) -> torch.Tensor:
        for res, attn in zip(level.res, level.attn, strict=True):
            if skips is not None and not push:
                h = torch.cat([h, skips.pop()], dim=1)
            h = res(h, emb)
            h = h if isinstance(attn, nn.Identity) else attn(h, states, mask)
            if skips is not None and push:
                skips.append(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor, states: torch.Tensor,
                mask: torch.Tensor, pooled: torch.Tensor, extra: torch.Tensor | None = None,
                emb_extra: torch.Tensor | None = None) -> torch.Tensor:
        """`emb_extra` (B, 4 * base_channels) is added to the timestep embedding: another scalar
        condition of every block (a super-resolution stage's noise-augmentation level)."""
        p = self.cfg.patch_size
        if x.shape[-1] % self.cfg.stride:
            raise ValueError(f"image side {x.shape[-1]} does not fit this UNet's downsampling")
        if (extra is None) != (self.cfg.extra_channels == 0):
            raise ValueError(f"this UNet takes {self.cfg.extra_channels} extra input channels")
        if extra is not None:
            x = torch.cat([x, extra.to(x.dtype)], dim=1)
        emb = self.time(t) + self.text_pool(pooled)
        if emb_extra is not None:
            emb = emb + emb_extra.to(emb.dtype)
        h = self.conv_in(F.pixel_unshuffle(x, p) if p > 1 else x)
        skips = [h]
        for i, level in enumerate(self.down):
            h = self._run(level, h, emb, states, mask, skips, push=True)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        h = self._run(self.mid, h, emb, states, mask, None, push=False)
        for i, level in enumerate(self.up):
            h = self._run(level, h, emb, states, mask, skips, push=False)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.conv_out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(h, p) if p > 1 else h
