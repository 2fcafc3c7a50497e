"""A latent model's generation options: the diffusion options (size in pixels)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gambar.generators.diffusion.options import DiffusionOptions


@dataclass(frozen=True)
class LatentOptions(DiffusionOptions):
    family: ClassVar[str] = "latent"
