"""The `[train]` section every recipe shares; family sections are read by the family itself.

A recipe TOML looks like:

    family = "diffusion"
    [train]
    steps = 2000
    lr = 3e-4
    [model]            # family-specific sections, checked by the family's own dataclasses
    base_channels = 64
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from gambar.config import dataclass_from_dict
from gambar.errors import InvalidInputError


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of the shared training loop (one `[train]` section)."""

    steps: int = 1000  # optimizer steps in total, counting any steps a resumed run already did
    batch_size: int = 16  # per process: the global batch is batch_size * num_processes
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0  # linear warm-up from lr / warmup_steps to lr
    # Warm-up, constant, then a cosine decay over the last `decay_steps` down to lr * min_lr_ratio
    # ("warmup-stable-decay"): the decay hangs off the final step, so a run can be extended with
    # --resume and a larger `steps` before it starts decaying, with no scheduler state to carry.
    decay_steps: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    ema_decay: float = 0.999
    ema_start: int = 0  # before this step the EMA copies the weights (early weights are noise)
    seed: int = 0
    checkpoint_every: int = 500
    sample_every: int = 500  # 0 disables sample grids
    log_every: int = 10
    run_dir: str = "runs/gambar"
    mixed_precision: Literal["no", "bf16"] = "no"
    # Stop (checkpoint, export) once the run's total wall time reaches this; 0 = no budget.
    # With a budget, `steps` is an upper bound (it still places the LR decay).
    max_minutes: float = 0.0

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "checkpoint_every", "log_every")
        for name in positive:
            if getattr(self, name) <= 0:
                raise InvalidInputError(f"train.{name} must be positive, got {getattr(self, name)}")
        for name in ("warmup_steps", "decay_steps", "ema_start", "sample_every", "grad_clip",
                     "weight_decay", "max_minutes"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.decay_steps and self.decay_steps + self.warmup_steps > self.steps:
            raise InvalidInputError(
                f"train.warmup_steps + train.decay_steps ({self.warmup_steps} + "
                f"{self.decay_steps}) must not exceed train.steps ({self.steps})")
        if not self.lr > 0:
            raise InvalidInputError(f"train.lr must be positive, got {self.lr}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise InvalidInputError(
                f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InvalidInputError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")


def train_config(recipe: dict[str, Any]) -> TrainConfig:
    """The recipe's `[train]` section as a checked `TrainConfig` (missing keys take defaults)."""
    return dataclass_from_dict(TrainConfig, recipe.get("train", {}), section="train")


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate for optimizer step `step` (0-based): warm-up, constant, cosine decay."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_from = cfg.steps - cfg.decay_steps
    if cfg.decay_steps and step >= decay_from:
        progress = (step - decay_from + 1) / cfg.decay_steps  # 1.0 at the last step
        floor = cfg.lr * cfg.min_lr_ratio
        return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr
