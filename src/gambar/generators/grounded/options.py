"""The grounded family's generation options: the diffusion options plus the layout stage's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gambar.generators.diffusion.options import DiffusionOptions
from gambar.options import option


@dataclass(frozen=True)
class GroundedOptions(DiffusionOptions):
    family: ClassVar[str] = "grounded"

    layout_temperature: float = option(
        1.0, low=0.0, high=2.0,
        help="how freely the layout stage places boxes: 0 = its likeliest layout, 1 = as it "
        "learned (ignored with --layout)")
