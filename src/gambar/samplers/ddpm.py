"""DDPM ancestral sampling (Ho et al. 2020) over a strided subset of the training timesteps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from gambar.samplers.base import (
    Callback,
    Denoiser,
    check_generators,
    check_timesteps,
    fresh_noise,
    signal_levels,
    timestep_batch,
)
from gambar.schedule import NoiseSchedule


@torch.no_grad()
def sample_ddpm(
    denoise: Denoiser,
    x: torch.Tensor,
    cond: Any,
    schedule: NoiseSchedule,
    timesteps: torch.Tensor,
    *,
    generators: Sequence[torch.Generator] | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Ancestral DDPM (Ho et al. 2020, eq. 6-7); x: (B, C, H, W) at timesteps[0] -> (B, C, H, W).

    Each step draws from the Gaussian posterior q(x_prev | x_t, x0_hat) between consecutive
    sampling timesteps, with the "fixed_small" variance beta-tilde, as diffusers' DDPMScheduler
    does for num_inference_steps < T. Fresh noise for image k comes from generators[k].
    """
    check_generators(x, generators)
    timesteps = check_timesteps(schedule, timesteps)
    ab = signal_levels(schedule, timesteps)
    total = len(timesteps)
    for i, t in enumerate(timesteps.tolist()):
        x0 = denoise(x, timestep_batch(t, x), cond)
        ab_t, ab_prev = ab[i], ab[i + 1]
        # The forward step from t_prev to t is itself Gaussian with this alpha/beta, which is
        # what lets a strided chain reuse eq. 7 (Nichol & Dhariwal 2021, sec. 4).
        alpha_step = ab_t / ab_prev
        beta_step = 1 - alpha_step
        coef_x0 = ab_prev**0.5 * beta_step / (1 - ab_t)
        coef_x = alpha_step**0.5 * (1 - ab_prev) / (1 - ab_t)
        variance = (1 - ab_prev) / (1 - ab_t) * beta_step  # beta-tilde; exactly 0 on the last step
        x = coef_x0 * x0 + coef_x * x
        if variance > 0:
            x = x + variance**0.5 * fresh_noise(x, generators)
        if callback is not None:
            callback(i, total, x)
    return x
