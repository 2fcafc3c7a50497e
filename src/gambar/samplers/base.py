"""The one contract every sampler is written against, and the helpers they share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from gambar.schedule import NoiseSchedule

# denoise(x (B, C, H, W), t (B,) long timesteps, cond) -> x0_hat (B, C, H, W): the *data*
# prediction in VP space. Samplers never see eps or v; the model wrapper converts (as_denoiser).
# `cond` is opaque to samplers and passed through untouched.
Denoiser = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]

# callback(i, total, x): after step i (0-based) of `total`, with the current sample x.
Callback = Callable[[int, int, torch.Tensor], None]

Prediction = Literal["eps", "v", "x0"]


def as_denoiser(
    net: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor],
    schedule: NoiseSchedule,
    prediction: Prediction,
) -> Denoiser:
    """Wrap a net predicting eps (Ho et al. 2020), v (Salimans & Ho 2022) or x0 as a Denoiser."""
    if prediction not in ("eps", "v", "x0"):
        raise ValueError(f"prediction must be 'eps', 'v' or 'x0', got {prediction!r}")

    def denoise(x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        out = net(x, t, cond)
        if prediction == "v":
            return schedule.x0_from_v(x, out, t)
        if prediction == "eps":
            return schedule.x0_from_eps(x, out, t)
        return out

    return denoise


def timestep_batch(t: int, x: torch.Tensor) -> torch.Tensor:
    """The timestep t repeated for every image of x: (B,) long on x's device."""
    return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


def fresh_noise(x: torch.Tensor, generators: Sequence[torch.Generator] | None) -> torch.Tensor:
    """N(0, 1) noise shaped like x (B, ...), image k drawn from generators[k] so that an image is
    the same whatever batch it is made in (STYLE.md §6); the global RNG when generators is None."""
    if generators is None:
        return torch.randn(x.shape, dtype=x.dtype).to(x.device)
    check_generators(x, generators)
    # Drawn on each generator's own device (CPU generators are the norm), then moved.
    noise = [
        torch.randn(x.shape[1:], generator=g, dtype=x.dtype, device=g.device) for g in generators
    ]
    return torch.stack(noise).to(x.device)


def check_generators(x: torch.Tensor, generators: Sequence[torch.Generator] | None) -> None:
    """Fail before the first model call, not midway, when generators do not match the batch."""
    if generators is not None and len(generators) != x.shape[0]:
        raise ValueError(f"got {len(generators)} generators for a batch of {x.shape[0]} images")


def check_timesteps(schedule: NoiseSchedule, timesteps: Sequence[int] | torch.Tensor
                    ) -> torch.Tensor:
    """The sampling timesteps as a 1-D long tensor: strictly decreasing, within the schedule.

    Every sampler takes this list rather than a step count, so a run may start part-way down:
    img2img (SDEdit, Meng et al. 2022) passes `schedule.timesteps(n)[k:]` with x the input
    image noised to timesteps[0]; the full list starts from pure noise at T-1."""
    ts = torch.as_tensor(timesteps, dtype=torch.long).cpu()
    if ts.ndim != 1 or ts.numel() == 0:
        raise ValueError(f"timesteps must be a non-empty 1-D list, got shape {tuple(ts.shape)}")
    if not bool((ts[1:] < ts[:-1]).all()) or ts[-1] < 0 or ts[0] >= schedule.num_timesteps:
        raise ValueError(f"timesteps must decrease strictly within [0, {schedule.num_timesteps})")
    return ts


def signal_levels(schedule: NoiseSchedule, timesteps: torch.Tensor) -> list[float]:
    """ab at each sampling timestep followed by 1.0: every sampler ends on clean data (sigma 0)."""
    ab = schedule.alphas_cumprod[timesteps].tolist()
    return [*ab, 1.0]
