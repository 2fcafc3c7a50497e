"""A super-resolution stage's generation options: the diffusion options plus the level of the
noise-conditioning augmentation (its default is the one stored with the model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gambar.generators.diffusion.options import DiffusionOptions
from gambar.options import option


@dataclass(frozen=True)
class SuperResOptions(DiffusionOptions):
    family: ClassVar[str] = "superres"

    aug_level: float = option(
        0.1, low=0.0, high=1.0,
        help="noise added to the low-resolution image before the stage reads it (0 = none, "
        "1 = all): more forgives a blurry or flawed input, less keeps its detail")
