"""The toy family's generation options: no sampler, no steps, no guidance — one forward pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gambar.options import Options, option


@dataclass(frozen=True)
class ToyOptions(Options):
    family: ClassVar[str] = "toy"

    truncation: float = option(1.0, low=0.0, high=2.0,
                               help="scale of the latent noise (the truncation trick)")
    size: int = option(16, low=8, high=64,
                       help="image side (a toy model draws the size it was trained at only)")
