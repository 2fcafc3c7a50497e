"""A super-resolution stage: a text-conditional UNet that also reads the upsampled, noise-augmented
low-resolution image (as extra input channels) and the augmentation level (like a timestep).

The stage diffuses the residual, image - upsampled low-resolution image, not the image: what it
draws is only the detail upsampling lacks, and an untrained stage already returns the upsampled
image (at pure noise its x0 estimate is 0). In a fixed short fit (tests/test_superres.py) the
image-diffusing form had not yet learnt to copy the low-resolution image at all.

Imagen's SR models (Saharia et al. 2022) and SR3 (Saharia et al. 2021) condition the same way:
concatenation of the upsampled image, and the level in the block embedding. Patchifying
(`unet.patch_size` 4 at 128 px, 8 at 256 px) keeps a stage's cost that of a 64 px model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from gambar.generators.diffusion.unet import UNet, UNetConfig
from gambar.nn.embeddings import TimestepMLP
from gambar.schedule import NoiseSchedule
from gambar.text.base import Encoded

LOW_RES_CHANNELS = 3


def downsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H / factor, W / factor) by box averaging (what a camera or a
    renderer at the lower resolution would record)."""
    return F.avg_pool2d(images, factor)


def upsample(low: torch.Tensor, factor: int) -> torch.Tensor:
    """The low-resolution image at the stage's size: bicubic, clamped to the data range."""
    return F.interpolate(low, scale_factor=float(factor), mode="bicubic",
                         align_corners=False).clamp(-1, 1)


def aug_timesteps(levels: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Augmentation levels in [0, 1] -> (B,) long timesteps of `schedule`."""
    return (levels * (schedule.num_timesteps - 1)).round().long()


def augment(low_up: torch.Tensor, t_aug: torch.Tensor, noise: torch.Tensor,
            schedule: NoiseSchedule) -> torch.Tensor:
    """Noise-conditioning augmentation: the upsampled image diffused to timestep t_aug; level 0
    leaves it exactly as it is."""
    noised = schedule.q_sample(low_up, t_aug, noise)
    clean = (t_aug == 0).view(-1, 1, 1, 1)
    return torch.where(clean, low_up, noised)


@dataclass(frozen=True)
class LowResCond:
    """A stage's conditioning: the prompt, the augmented upsampled image (B, 3, H, W) it reads,
    the augmentation timesteps (B,), and the clean upsampled image (B, 3, H, W) that the drawn
    residual is added to. `cat` batches it for classifier-free guidance."""

    text: Encoded
    low: torch.Tensor
    t_aug: torch.Tensor
    base: torch.Tensor

    @staticmethod
    def cat(parts: Sequence[LowResCond]) -> LowResCond:
        return LowResCond(Encoded.cat([p.text for p in parts]),
                          torch.cat([p.low for p in parts]), torch.cat([p.t_aug for p in parts]),
                          torch.cat([p.base for p in parts]))


class SuperResModel(nn.Module):
    """UNet(noisy high-res ++ low-res) with the augmentation level added to its embedding."""

    def __init__(self, unet_cfg: UNetConfig) -> None:
        super().__init__()
        self.unet = UNet(replace(unet_cfg, extra_channels=LOW_RES_CHANNELS))
        width = 4 * unet_cfg.base_channels
        self.aug = TimestepMLP(unet_cfg.base_channels, width)
        # Zero at the start: the level's effect is learned, never noise in the embedding.
        nn.init.zeros_(self.aug.mlp[-1].weight)
        nn.init.zeros_(self.aug.mlp[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: LowResCond) -> torch.Tensor:
        text = cond.text
        return self.unet(x, t, text.states, text.mask, text.pooled, cond.low,
                         self.aug(cond.t_aug))
