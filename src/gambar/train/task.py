"""What a family hands the shared training loop. The loop knows nothing of diffusion or GANs.

A task names its parameter groups (one optimiser and LR schedule each), the part of the model
that gets an EMA, and a `step` that runs one or several optimiser updates per batch (a GAN:
the discriminator's, then the generator's), each with its loss and named figures for the log.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch
from PIL import Image


class Update(NamedTuple):
    """One optimiser update inside a training step.

    The loop back-propagates `loss`, clips and steps the optimiser of parameter group `group`,
    then zeroes every gradient. `logs` are detached scalars shown in the progress bar and
    written to log.jsonl as "<name>" (averaged over ranks and the log window); the loss itself
    is logged as "loss/<group>"."""

    group: str
    loss: torch.Tensor
    logs: Mapping[str, torch.Tensor] = {}


class TrainingTask(Protocol):
    """One family's training recipe, built from a recipe dict by the family's registry entry.

    `model` holds every trainable parameter (a trainable text encoder included); frozen parts
    (a pretrained text encoder) live on the task, not in `model`, so they are neither optimised,
    EMA'd nor checkpointed. Every network call in `step` goes through the `model` it is given
    (under DDP a wrapper whose forward synchronises gradients), e.g. `model(x, part="d")`.
    """

    model: torch.nn.Module

    def batches(self, start: int, rank: int, world_size: int, batch_size: int) -> Iterator[Any]:
        """Endless, deterministic batches. `start` is the number of batches this rank already
        consumed (the data position saved in checkpoints), so resuming skips nothing and
        repeats nothing. Rank r of W sees a disjoint share of the stream
        (gambar.data.batches.endless_batches does this for any indexable dataset)."""
        ...

    def param_groups(self, model: torch.nn.Module) -> Mapping[str, list[torch.nn.Parameter]]:
        """Parameter group name -> its parameters; one optimiser each. The groups must not
        overlap. A single-optimiser task returns {"model": list(model.parameters())}."""
        ...

    def ema_target(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """The submodule of `model` whose weights get an exponential moving average (a GAN's
        generator); the rest of the exported model is the live weights. `model` itself for
        all of it, None for no EMA."""
        ...

    def step(self, model: torch.nn.Module, batch: Any, generator: torch.Generator,
             step: int) -> Iterator[Update]:
        """The updates of one training step, in order. All randomness (timesteps, noise,
        caption dropout) comes from `generator` so that a resumed run replays it exactly.
        The loop applies each Update before asking for the next, so a later loss sees the
        earlier update's weights (the generator's step sees the updated discriminator)."""
        ...

    def sample_grid(self, model: torch.nn.Module) -> Image.Image:
        """A small grid of samples from `model` (the EMA copy) for a person to look at."""
        ...

    def export(self, model: torch.nn.Module, path: Path, summary: dict[str, Any]) -> None:
        """Save `model` (the EMA copy) as a loadable model directory (config.json +
        safetensors). `summary` (steps, wall time, ...) goes into config.json."""
        ...


def prompt_grid(pipe: Any, model: torch.nn.Module, prompts: list[str], first_seed: int
                ) -> Image.Image:
    """A task's sample grid: `pipe` (built on `model`) draws each prompt from seeds first_seed,
    first_seed + 1, ...; `model`'s training mode is restored after."""
    from gambar.imaging import make_grid

    was_training = model.training
    seeds = [first_seed + i for i in range(len(prompts))]
    out = pipe.generate(prompts, seeds=seeds, progress=False)
    model.train(was_training)
    return make_grid([g.image for g in out], cols=4, scale=2)
