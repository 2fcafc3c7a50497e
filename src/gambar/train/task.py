"""What a family hands the shared training loop. The loop knows nothing of diffusion or GANs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image


class TrainingTask(Protocol):
    """One family's training recipe, built from a recipe dict by the family's registry entry.

    `model` holds every trainable parameter (a trainable text encoder included); frozen parts
    (a pretrained text encoder) live on the task, not in `model`, so they are neither optimised,
    EMA'd nor checkpointed.
    """

    model: torch.nn.Module

    def batches(self, start: int, rank: int, world_size: int, batch_size: int) -> Iterator[Any]:
        """Endless, deterministic batches. `start` is the number of batches this rank already
        consumed (the data position saved in checkpoints), so resuming skips nothing and
        repeats nothing. Rank r of W sees a disjoint share of the stream."""
        ...

    def loss(self, model: torch.nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor:
        """Scalar training loss. All randomness (timesteps, noise, caption dropout) comes from
        `generator` so that a resumed run replays it exactly."""
        ...

    def sample_grid(self, model: torch.nn.Module) -> Image.Image:
        """A small grid of samples from `model` (the EMA copy) for a person to look at."""
        ...

    def export(self, model: torch.nn.Module, path: Path, summary: dict[str, Any]) -> None:
        """Save `model` (the EMA copy) as a loadable pipeline directory (config.json +
        safetensors). `summary` (steps, wall time, ...) goes into config.json."""
        ...
