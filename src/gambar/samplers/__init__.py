"""Samplers: stateless functions over one denoiser contract (see base.py), and a registry."""

from collections.abc import Callable

import torch

from gambar.errors import InvalidInputError
from gambar.samplers.base import Callback, Denoiser, as_denoiser
from gambar.samplers.ddim import sample_ddim
from gambar.samplers.ddpm import sample_ddpm
from gambar.samplers.dpmpp import sample_dpmpp
from gambar.samplers.euler import sample_euler
from gambar.samplers.guidance import classifier_free, dynamic_threshold
from gambar.schedule import NoiseSchedule

# Every entry is called as sampler(denoise, x, cond, schedule, timesteps, *, generators=None,
# callback=None, **options) -> samples, timesteps descending (schedule.timesteps(steps), or a
# tail of it to start part-way); only ddim takes an option (eta).
SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp": sample_dpmpp,
    "euler": sample_euler,
}


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    """The sampler registered under `name`; InvalidInputError naming the valid ones if none is."""
    try:
        return SAMPLERS[name]
    except KeyError:
        valid = ", ".join(SAMPLERS)
        raise InvalidInputError(f"unknown sampler {name!r}; choose one of: {valid}") from None


__all__ = [
    "SAMPLERS",
    "Callback",
    "Denoiser",
    "NoiseSchedule",
    "as_denoiser",
    "classifier_free",
    "dynamic_threshold",
    "get_sampler",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp",
    "sample_euler",
]
