"""The diffusion family's generation options: the one place they are defined, defaulted and
checked (the CLI's flags, the server's schema and --replay all come from this class).

A model's own defaults (config.json "defaults", set by scripts/ship_model.py) replace the
class defaults below; `size` defaults to the size the model was trained at.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from gambar.errors import InvalidInputError
from gambar.options import Options, option

# The samplers this family offers (gambar.samplers registers each under this name).
SAMPLER_NAMES = ("dpmpp", "ddim", "ddpm", "euler")
MAX_SIZE = 256  # the largest side sampled: a CPU draws 256 px at 16x the cost of 64 px


@dataclass(frozen=True)
class DiffusionOptions(Options):
    family: ClassVar[str] = "diffusion"

    negative_prompt: str = option(
        "", max_chars=500, flag="--negative",
        help="negative prompt: what the image should not look like")
    # Measured on the default model (benchmarks/sampler_settings.py, 40 prompts): DPM-Solver++
    # (2M) at 20 steps scores like DDIM at 100 in a fifth of the time; guidance 2 scored best.
    steps: int = option(20, low=1, high=1000, help="sampler steps (network evaluations, "
                        "doubled when guidance is on)")
    guidance: float = option(2.0, low=0.0, high=50.0,
                             help="classifier-free guidance scale; 1 = off")
    sampler: str = option("dpmpp", choices=SAMPLER_NAMES,
                          help="dpmpp = DPM-Solver++(2M), ddim, ddpm (ancestral), euler")
    eta: float = option(0.0, low=0.0, high=1.0, provenance="sampler_options",
                        help="DDIM's noise: 0 deterministic, 1 ancestral (ddim only)")
    size: int = option(64, low=8, high=MAX_SIZE,
                       help="image side in pixels (default: the size the model was trained at)")
    # bf16 runs convolutions and matmuls under bfloat16 autocast (the sampler's arithmetic stays
    # fp32): faster on CPUs with bf16 units, pixels differ by a few levels.
    precision: str = option("fp32", choices=("fp32", "bf16"),
                            help="network arithmetic: fp32, or bf16 (faster on CPUs with "
                            "bfloat16 units; pixels differ by a few levels)")
    # Imagen (Saharia et al. 2022, sec. 2.3): at high guidance the x0 estimate leaves [-1, 1] and
    # images saturate; clamping it per image at a percentile of |x0| keeps them in range.
    threshold: float = option(0.0, low=0.0, high=1.0, provenance="sampler_options",
                              help="dynamic thresholding: clamp each step's image estimate at "
                              "this percentile of its values (e.g. 0.995) so high guidance "
                              "does not saturate; 0 = off")
    strength: float = option(0.75, low=0.0, high=1.0, needs="init",
                             help="with --init: how much of the init image is redrawn "
                             "(0 keeps it, 1 ignores it; SDEdit)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eta and self.sampler != "ddim":
            raise InvalidInputError(f"eta applies to the ddim sampler only, not {self.sampler}; "
                                    "leave it out or choose --sampler ddim")

    def with_changes(self, changes: Mapping[str, Any], *, where: str = "") -> DiffusionOptions:
        """As Options.with_changes; choosing another sampler drops an eta the change does not
        give (a model whose stored default is ddim with eta 0.5 can still use euler)."""
        sampler = changes.get("sampler")
        if sampler is not None and sampler != "ddim" and changes.get("eta") is None:
            changes = {**changes, "eta": 0.0}
        return super().with_changes(changes, where=where)
