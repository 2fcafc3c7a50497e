"""Settings of a super-resolution stage (everything but its UNet's shape)."""

from __future__ import annotations

from dataclasses import dataclass

from gambar.config import check_range
from gambar.errors import InvalidInputError

FACTORS = (2, 4)


@dataclass(frozen=True)
class SuperResConfig:
    """`[superres]`: how much a stage raises the side, and its noise-conditioning augmentation.

    Imagen (Saharia et al. 2022, sec. 2.4) noises the low-resolution image during training at a
    random level that the stage is told; at sampling a small fixed level makes the stage forgive
    the base model's artefacts. Levels are fractions of the diffusion schedule (0 = clean,
    1 = pure noise), applied with the stage's own noise schedule."""

    factor: int = 2
    aug_max: float = 0.5  # training levels are uniform in [0, aug_max]
    aug_level: float = 0.1  # the level used at sampling unless a request sets another
    # The residual (image - upsampled image) is diffused times this: residuals of flat-coloured
    # renders have a std near 0.07, and unscaled they sit below the noise at most timesteps.
    residual_scale: float = 8.0

    def __post_init__(self) -> None:
        if self.factor not in FACTORS:
            raise InvalidInputError(
                f"superres.factor must be one of {', '.join(map(str, FACTORS))}, not {self.factor}")
        check_range("superres.aug_max", self.aug_max, 0.0, 1.0)
        check_range("superres.aug_level", self.aug_level, 0.0, 1.0)
        check_range("superres.residual_scale", self.residual_scale, 0.0, 100.0, low_open=True)
