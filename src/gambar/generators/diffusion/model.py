"""The trainable diffusion model (UNet + optional trainable text encoder) and its denoiser."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from gambar.generators.diffusion.config import DiffusionConfig
from gambar.generators.diffusion.unet import UNet, UNetConfig
from gambar.schedule import NoiseSchedule
from gambar.text.base import Encoded, TextEncoder


def build_schedule(cfg: DiffusionConfig) -> NoiseSchedule:
    """The noise schedule a diffusion config names."""
    if cfg.schedule == "cosine":
        return NoiseSchedule.cosine(cfg.timesteps, shift=cfg.schedule_shift)
    return NoiseSchedule.linear(cfg.timesteps)


class DiffusionModel(nn.Module):
    """Everything that trains: the UNet and, when it is not a frozen pretrained one, the text
    encoder. A frozen encoder is passed in at call time so it is never optimised or saved."""

    def __init__(self, unet_cfg: UNetConfig, text: nn.Module | None = None) -> None:
        super().__init__()
        self.unet = UNet(unet_cfg)
        self.text = text

    def encode(self, texts: Sequence[str], frozen: TextEncoder | None) -> Encoded:
        """Prompts -> Encoded, through the trainable encoder if there is one, else `frozen`."""
        encoder = self.text if self.text is not None else frozen
        if encoder is None:
            raise ValueError("this model has no trainable text encoder; pass the frozen one")
        return encoder(list(texts))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Encoded | Sequence[str]
                ) -> torch.Tensor:
        """The network's raw output (v or eps) for noisy images x: (B, C, H, W) at steps t: (B,).

        `cond` is encoded prompts, or raw prompts for the trainable encoder: encoding inside
        forward() keeps the text encoder under DDP's gradient synchronisation.
        """
        if not isinstance(cond, Encoded):
            cond = self.encode(cond, None)
        return self.unet(x, t, cond.states, cond.mask, cond.pooled)


def diffusion_loss(
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: NoiseSchedule,
    cfg: DiffusionConfig,
    images: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Denoising loss on images: (B, C, H, W) in [-1, 1] (Ho et al. 2020; v target, Min-SNR).

    `predict(x_t, t)` is the conditioned network (its prompts already bound)."""
    b = images.shape[0]
    t = torch.randint(0, cfg.timesteps, (b,), generator=generator)
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
    x_t = schedule.q_sample(images, t, noise)
    target = schedule.v_target(images, noise, t) if cfg.prediction == "v" else noise
    per_image = (predict(x_t, t) - target).square().mean(dim=(1, 2, 3))
    if cfg.loss_weighting == "min-snr":
        ab = schedule.alphas_cumprod[t].to(images.dtype)
        snr = ab / (1 - ab)
        # The v loss already weighs x0 errors by (snr + 1); eps by snr. Rescale to min(snr, g).
        denom = snr + 1 if cfg.prediction == "v" else snr
        per_image = per_image * snr.clamp(max=cfg.min_snr_gamma) / denom
    return per_image.mean()
