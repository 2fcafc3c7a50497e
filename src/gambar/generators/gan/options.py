"""A GAN's generation options: no sampler, no steps, no guidance — one generator pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gambar.options import Options, option


@dataclass(frozen=True)
class GanOptions(Options):
    family: ClassVar[str] = "gan"

    truncation: float = option(
        1.0, low=0.0, high=2.0,
        help="scale of the latent noise: below 1 trades variety for typical images (the "
             "truncation trick), 0 draws the same image for every seed of a prompt")
    layout_temperature: float = option(
        1.0, low=0.0, high=2.0,
        help="a layout GAN (GauGAN2) without --layout: sampling temperature of its layout "
             "stage's box positions (0: the likeliest layout)")
    size: int = option(64, low=8, high=256,
                       help="image side (a GAN draws the size it was trained at only)")
