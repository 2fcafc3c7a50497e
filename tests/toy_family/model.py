"""The toy family's network: a tiny conditional GAN that draws a coloured box on white.

Both parts see the caption as a byte histogram through a Linear (no tokenizer, nothing to
download) and the layout as a (1, S, S) mask. `ToyGAN.forward(..., part="d"|"g")` returns that
part's loss, so that under DDP every network call goes through the wrapped module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from gambar.config import check_range, dataclass_from_dict
from gambar.errors import InvalidInputError
from gambar.inputs import Layout

BYTES = 256  # the caption feature: how often each UTF-8 byte value occurs
MAX_CAPTION_BYTES = 1024


@dataclass(frozen=True)
class ToyConfig:
    """`[model]` of a toy recipe, stored as config.json's "toy"."""

    size: int = 16  # image side in pixels (a multiple of 4: the discriminator halves it twice)
    z_dim: int = 16
    text_dim: int = 16  # width of each part's caption feature
    g_width: int = 32  # generator channels
    d_width: int = 32  # discriminator channels

    def __post_init__(self) -> None:
        check_range("model.size", self.size, 8, 64)
        if self.size % 4:
            raise InvalidInputError(f"model.size must be a multiple of 4, got {self.size}")
        for name in ("z_dim", "text_dim", "g_width", "d_width"):
            check_range(f"model.{name}", getattr(self, name), 1, 256)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ToyConfig:
        """A checked config from a recipe table or config.json (one-line InvalidInputError)."""
        return dataclass_from_dict(cls, data, section="model")


def caption_features(captions: Sequence[str]) -> torch.Tensor:
    """(B, 256) byte frequencies of each caption: cheap, and enough to tell colour words apart."""
    out = torch.zeros(len(captions), BYTES)
    for k, caption in enumerate(captions):
        data = caption.encode()[:MAX_CAPTION_BYTES]
        if data:
            counts = torch.bincount(torch.tensor(list(data)), minlength=BYTES)
            out[k] = counts.float() / len(data)
    return out


def layout_mask(layout: Layout, size: int) -> torch.Tensor:
    """(1, size, size): 1 on the pixels any of the layout's boxes covers, else 0."""
    mask = torch.zeros(1, size, size)
    for box in layout.objects:
        x0, y0 = math.floor(box.x0 * size), math.floor(box.y0 * size)
        x1 = max(math.ceil(box.x1 * size), x0 + 1)  # a sliver of a box still marks a pixel
        y1 = max(math.ceil(box.y1 * size), y0 + 1)
        mask[:, y0:y1, x0:x1] = 1.0
    return mask


class ToyGenerator(nn.Module):
    """(z, caption feature, mask) -> (B, 3, S, S) in [-1, 1]."""

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.size = cfg.size
        self.text = nn.Linear(BYTES, cfg.text_dim)
        self.latent = nn.Linear(cfg.z_dim + cfg.text_dim, cfg.g_width)
        self.conv = nn.Conv2d(cfg.g_width + 1, cfg.g_width, 3, padding=1)
        self.out = nn.Conv2d(cfg.g_width, 3, 3, padding=1)

    def forward(self, z: torch.Tensor, text: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        h = self.latent(torch.cat([z, self.text(text)], 1))
        h = h[:, :, None, None].expand(-1, -1, self.size, self.size)
        h = F.leaky_relu(self.conv(torch.cat([h, masks], 1)), 0.2)
        return torch.tanh(self.out(h))


class ToyDiscriminator(nn.Module):
    """(images, caption feature, mask) -> (B,) logits, real > 0."""

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.text = nn.Linear(BYTES, cfg.text_dim)
        self.conv1 = nn.Conv2d(4, cfg.d_width, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(cfg.d_width, cfg.d_width, 3, stride=2, padding=1)
        self.out = nn.Linear(cfg.d_width + cfg.text_dim, 1)

    def forward(self, images: torch.Tensor, text: torch.Tensor,
                masks: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv1(torch.cat([images, masks], 1)), 0.2)
        h = F.leaky_relu(self.conv2(h), 0.2).mean((2, 3))
        return self.out(torch.cat([h, self.text(text)], 1)).squeeze(1)


class ToyGAN(nn.Module):
    """The generator and the discriminator, trained with the non-saturating GAN loss."""

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.generator = ToyGenerator(cfg)
        self.discriminator = ToyDiscriminator(cfg)

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, images: torch.Tensor, captions: Sequence[str], masks: torch.Tensor,
                z: torch.Tensor, part: Literal["d", "g"]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(that part's loss, figures for the log) on real `images` and fakes drawn from `z`.

        "d": the discriminator's loss, the fakes made without gradient (the generator is not
        part of this update); "g": the generator's loss through the discriminator."""
        text = caption_features(captions).to(self._device())
        if part == "d":
            with torch.no_grad():
                fake = self.generator(z, text, masks)
            real_logits = self.discriminator(images, text, masks)
            fake_logits = self.discriminator(fake, text, masks)
            loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
            return loss, {"d_real": torch.sigmoid(real_logits).mean().detach(),
                          "d_fake": torch.sigmoid(fake_logits).mean().detach()}
        if part == "g":
            fake_logits = self.discriminator(self.generator(z, text, masks), text, masks)
            return F.softplus(-fake_logits).mean(), {}
        raise ValueError(f"part must be 'd' or 'g', not {part!r}")

    @torch.no_grad()
    def draw(self, z: torch.Tensor, captions: Sequence[str], masks: torch.Tensor
             ) -> torch.Tensor:
        """One pass of the generator: (B, 3, S, S) images in [-1, 1] for (B, z_dim) noise, B
        captions and (B, 1, S, S) layout masks; image k depends on row k alone."""
        device = self._device()
        return self.generator(z.to(device), caption_features(captions).to(device),
                              masks.to(device))
