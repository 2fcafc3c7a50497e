"""The GAN family's two networks: a text-conditional generator and a discriminator with a
text-matching head and the image/region/text embeddings of XMC-GAN's contrastive terms.

Both are residual conv nets (BigGAN-style blocks: the field's stable choice since 2018; Reed et
al.'s DCGAN had plain conv stacks). GroupNorm, not BatchNorm, in the generator: an image must
not depend on the others in its batch (gambar's per-image seeds). Spectral norm on every
discriminator weight (Miyato et al. 2018) keeps it Lipschitz without a gradient penalty.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gambar.generators.gan.config import GanConfig
from gambar.generators.gan.layout import ObjectMasks, Painter

GROUPS = 8
SPADE_HIDDEN = 32  # GauGAN's is 128; a 64 px CPU model cannot pay for that at every norm


def _widths(start: int, count: int, factor: float, low: int, high: int) -> list[int]:
    return [int(min(max(start * factor**i, low), high)) for i in range(count)]


def _paint(painter: Painter | None, objects: ObjectMasks | None) -> torch.Tensor | None:
    if painter is None:
        return None
    if objects is None:
        raise ValueError("a layout model needs the objects of a layout")
    return painter(objects)


class ConditionAugment(nn.Module):
    """StackGAN's conditioning augmentation: the sentence vector gives a Gaussian
    N(mu, sigma^2), the condition is a draw from it (more, smoother conditions from few
    captions), and its KL to N(0, I) keeps the Gaussian wide."""

    def __init__(self, text_dim: int, cond_dim: int, sample: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(text_dim, 2 * cond_dim)
        self.sample = sample

    def forward(self, sentence: torch.Tensor, eps: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(condition (B, cond_dim), KL (scalar)); `eps` is the (B, cond_dim) standard noise."""
        mu, logvar = F.leaky_relu(self.fc(sentence), 0.2).chunk(2, dim=1)
        if not self.sample:
            return mu, mu.new_zeros(())
        kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1).mean()
        return mu + (0.5 * logvar).exp() * eps, kl


class AdaptiveNorm(nn.Module):
    """GroupNorm whose scale and shift are learned constants, plus (when given) a linear
    function of a style vector (self-modulation) and a conv of a layout map (SPADE)."""

    def __init__(self, channels: int, style_dim: int = 0, layout_dim: int = 0) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(min(GROUPS, channels), channels, affine=False)
        self.scale = nn.Parameter(torch.zeros(channels))
        self.shift = nn.Parameter(torch.zeros(channels))
        self.style = nn.Linear(style_dim, 2 * channels) if style_dim else None
        self.spade = (nn.Sequential(nn.Conv2d(layout_dim, SPADE_HIDDEN, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(SPADE_HIDDEN, 2 * channels, 3, padding=1))
                      if layout_dim else None)

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None,
                layout: torch.Tensor | None = None) -> torch.Tensor:
        scale = self.scale[None, :, None, None]
        shift = self.shift[None, :, None, None]
        if self.style is not None and style is not None:
            s, b = self.style(style)[:, :, None, None].chunk(2, dim=1)
            scale, shift = scale + s, shift + b
        if self.spade is not None and layout is not None:
            s, b = self.spade(F.interpolate(layout, size=x.shape[-2:], mode="nearest")
                              ).chunk(2, dim=1)
            scale, shift = scale + s, shift + b
        return self.norm(x) * (1 + scale) + shift


class GeneratorBlock(nn.Module):
    """x2 nearest upsampling, two 3x3 convs with adaptive norms, and a 1x1 skip."""

    def __init__(self, cin: int, cout: int, style_dim: int, layout_dim: int) -> None:
        super().__init__()
        self.norm1 = AdaptiveNorm(cin, style_dim, layout_dim)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = AdaptiveNorm(cout, style_dim, layout_dim)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, style: torch.Tensor | None,
                layout: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        h = self.conv1(F.relu(self.norm1(x, style, layout)))
        h = self.conv2(F.relu(self.norm2(h, style, layout)))
        return h + self.skip(x)


class Generator(nn.Module):
    """(z, sentence vector[, layout map]) -> (B, 3, S, S) in [-1, 1]: one forward pass."""

    def __init__(self, cfg: GanConfig, text_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.condition = ConditionAugment(text_dim, cfg.cond_dim, cfg.ca)
        style_dim = cfg.z_dim + cfg.cond_dim
        widths = _widths(cfg.g_channels, cfg.doublings + 1, 0.5, cfg.g_min, cfg.g_channels)
        self.start = nn.Linear(style_dim, widths[0] * 16)
        mod = style_dim if cfg.modulation else 0
        lay = cfg.layout_dim + 1 if cfg.layout else 0
        self.painter = Painter(text_dim, cfg.layout_dim) if cfg.layout else None
        self.blocks = nn.ModuleList(GeneratorBlock(a, b, mod, lay)
                                    for a, b in zip(widths, widths[1:], strict=False))
        self.out_norm = AdaptiveNorm(widths[-1], mod, lay)
        self.out = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def forward(self, z: torch.Tensor, sentence: torch.Tensor, eps: torch.Tensor,
                objects: ObjectMasks | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, the conditioning augmentation's KL); `eps` its (B, cond_dim) noise;
        `objects` the layout (a layout model only)."""
        layout = _paint(self.painter, objects)
        cond, kl = self.condition(sentence, eps)
        style = torch.cat([z, cond], dim=1)
        h = self.start(style).view(len(z), -1, 4, 4)
        mod = style if self.cfg.modulation else None
        for block in self.blocks:
            h = block(h, mod, layout)
        return torch.tanh(self.out(F.relu(self.out_norm(h, mod, layout)))), kl


class DiscriminatorBlock(nn.Module):
    """Two spectrally normalised 3x3 convs and a 1x1 skip, then x2 average pooling."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = spectral_norm(nn.Conv2d(cin, cout, 3, padding=1))
        self.conv2 = spectral_norm(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = spectral_norm(nn.Conv2d(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2))
        return F.avg_pool2d(h + self.skip(x), 2)


class Features:
    """What the discriminator's shared trunk computed for a batch of images."""

    def __init__(self, top: torch.Tensor, regions: torch.Tensor) -> None:
        self.top = top  # (B, C, 4, 4)
        self.regions = regions  # (B, C', 8, 8): the last level above the top


class Discriminator(nn.Module):
    """A shared image trunk with two uses: the text-matching logit the matching-aware loss of
    Reed et al. trains, and XMC-GAN's embeddings (global image, 8 x 8 regions, sentence,
    words) for its contrastive terms."""

    def __init__(self, cfg: GanConfig, text_dim: int) -> None:
        super().__init__()
        widths = _widths(cfg.d_channels, cfg.doublings + 1, 2.0, 8, cfg.d_max)
        # a layout model's D judges (image, layout) pairs, as GauGAN's does
        self.painter = Painter(text_dim, cfg.layout_dim) if cfg.layout else None
        extra = cfg.layout_dim + 1 if cfg.layout else 0
        self.stem = spectral_norm(nn.Conv2d(3 + extra, widths[0], 3, padding=1))
        self.blocks = nn.ModuleList(DiscriminatorBlock(a, b)
                                    for a, b in zip(widths, widths[1:], strict=False))
        top = widths[-1]
        # Projection (Miyato & Koyama 2018) instead of the paper's concatenation of the text at
        # 4 x 4: measured on a tiny run, the concatenating head learned to ignore the text (right
        # and wrong captions scored alike after 300 steps). No spectral norm on the text's
        # projection: captions' sentence vectors differ little (MiniLM's are unit length).
        self.text = nn.Linear(text_dim, top)
        self.logit = spectral_norm(nn.Linear(top, 1))
        e = cfg.embed_dim
        self.image_embed = spectral_norm(nn.Linear(top, e))
        self.region_embed = spectral_norm(nn.Conv2d(widths[-2], e, 1))
        self.sentence_embed = nn.Linear(text_dim, e)
        self.word_embed = nn.Linear(text_dim, e)

    def trunk(self, images: torch.Tensor, objects: ObjectMasks | None = None) -> Features:
        layout = _paint(self.painter, objects)
        h = images if layout is None else torch.cat([images, layout.to(images.dtype)], dim=1)
        h = self.stem(h)
        regions = h
        for block in self.blocks:
            regions, h = h, block(h)
        return Features(F.leaky_relu(h, 0.2), regions)

    def match(self, feats: Features, sentence: torch.Tensor) -> torch.Tensor:
        """(B,) logits: does this image look real, and show this sentence? An unconditional
        term plus the inner product of the pooled image features with the projected text."""
        h = feats.top.sum(dim=(2, 3))
        return self.logit(h).squeeze(1) + (self.text(sentence) * h).sum(dim=1)

    def image_embedding(self, feats: Features) -> torch.Tensor:
        return self.image_embed(feats.top.sum(dim=(2, 3)))

    def region_embeddings(self, feats: Features) -> torch.Tensor:
        """(B, R, E): one embedding per 8 x 8 region."""
        return self.region_embed(F.leaky_relu(feats.regions, 0.2)).flatten(2).transpose(1, 2)
