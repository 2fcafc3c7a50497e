"""A test-only generator family: a tiny conditional GAN that draws a coloured box from a caption
and a layout. Two optimisers (generator, discriminator), EMA on the generator only, no sampler,
a layout input and a two-component model directory: everything diffusion does not exercise in
the family contract (issue 12), so that tests/test_contract.py checks the contract itself.

`register()` adds it to gambar's registry the way a plug-in family would.
"""

from __future__ import annotations

from gambar.registry import register_generator

FAMILY = "toy"


def register() -> None:
    register_generator(FAMILY, "toy_family.pipeline:ToyPipeline", "toy_family.task:ToyTask",
                       "toy_family.options:ToyOptions")
