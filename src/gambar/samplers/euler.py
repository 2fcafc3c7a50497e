"""Euler sampler in sigma space (Karras et al. 2022), as diffusers' EulerDiscreteScheduler."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from gambar.samplers.base import (
    Callback,
    Denoiser,
    check_generators,
    check_timesteps,
    signal_levels,
    timestep_batch,
)
from gambar.schedule import NoiseSchedule


@torch.no_grad()
def sample_euler(
    denoise: Denoiser,
    x: torch.Tensor,
    cond: Any,
    schedule: NoiseSchedule,
    timesteps: torch.Tensor,
    *,
    generators: Sequence[torch.Generator] | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Euler on the probability-flow ODE dx/dsigma = (x - x0_hat) / sigma in VE coordinates
    (Karras et al. 2022, alg. 1 without 2nd-order correction); x: (B, C, H, W) VP, at timesteps[0].

    sigma = sqrt((1 - ab) / ab) and x_ve = x_vp / sqrt(ab) = x_vp sqrt(1 + sigma^2); the last
    step goes to sigma = 0. Mathematically this equals DDIM with eta = 0 (Song et al. 2021,
    sec. 4.3); it is kept as its own sampler to match diffusers' Euler and k-diffusion.
    Deterministic: `generators` is accepted for a uniform sampler signature and never used.
    """
    check_generators(x, generators)
    timesteps = check_timesteps(schedule, timesteps)
    sigmas = [((1 - a) / a) ** 0.5 for a in signal_levels(schedule, timesteps)]  # ends at 0
    total = len(timesteps)
    x = x * (1 + sigmas[0] ** 2) ** 0.5  # VP -> VE
    for i, t in enumerate(timesteps.tolist()):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        vp_scale = (1 + sigma**2) ** -0.5  # the network sees VP inputs
        x0 = denoise(x * vp_scale, timestep_batch(t, x), cond)
        # x + (x - x0)/sigma * (sigma_next - sigma), regrouped: at the cosine schedule's
        # sigma ~ 2e4 the direct form cancels away ~1e-4 of float32 precision in VP terms.
        x = x0 + (sigma_next / sigma) * (x - x0)
        if callback is not None:
            callback(i, total, x * (1 + sigma_next**2) ** -0.5)
    return x
