"""DDIM: denoising diffusion implicit models (Song et al. 2021), deterministic at eta = 0."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from gambar.errors import InvalidInputError
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
def sample_ddim(
    denoise: Denoiser,
    x: torch.Tensor,
    cond: Any,
    schedule: NoiseSchedule,
    timesteps: torch.Tensor,
    *,
    eta: float = 0.0,
    generators: Sequence[torch.Generator] | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12); x: (B, C, H, W) at timesteps[0] -> samples (B, C, H, W).

    eta scales the fresh noise: 0 is the deterministic ODE-like sampler, 1 gives DDPM's posterior
    variance (eq. 16). Fresh noise for image k comes from generators[k].
    """
    if not 0.0 <= eta <= 1.0:
        raise InvalidInputError(f"eta must be between 0 and 1, got {eta}")
    check_generators(x, generators)
    timesteps = check_timesteps(schedule, timesteps)
    ab = signal_levels(schedule, timesteps)  # the last level is 1: the final step lands on x0
    total = len(timesteps)
    for i, t in enumerate(timesteps.tolist()):
        x0 = denoise(x, timestep_batch(t, x), cond)
        ab_t, ab_next = ab[i], ab[i + 1]
        eps = (x - ab_t**0.5 * x0) / (1 - ab_t) ** 0.5
        std = eta * ((1 - ab_next) / (1 - ab_t) * (1 - ab_t / ab_next)) ** 0.5  # eq. 16
        # max(): round-off can push 1 - ab_next - std^2 a hair below 0 at eta = 1.
        x = ab_next**0.5 * x0 + max(1 - ab_next - std**2, 0.0) ** 0.5 * eps
        if std > 0:
            x = x + std * fresh_noise(x, generators)
        if callback is not None:
            callback(i, total, x)
    return x
