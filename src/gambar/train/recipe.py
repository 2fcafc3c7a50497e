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
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    ema_decay: float = 0.999
    ema_start: int = 0  # before this step the EMA copies the weights (early weights are noise)
    seed: int = 0
    checkpoint_every: int = 500
    sample_every: int = 500  # 0 disables sample grids
    log_every: int = 10
    run_dir: str = "runs/gambar"
    mixed_precision: Literal["no", "bf16"] = "no"

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "checkpoint_every", "log_every")
        for name in positive:
            if getattr(self, name) <= 0:
                raise InvalidInputError(f"train.{name} must be positive, got {getattr(self, name)}")
        for name in ("warmup_steps", "ema_start", "sample_every", "grad_clip", "weight_decay"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise InvalidInputError(f"train.lr must be positive, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InvalidInputError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")


def train_config(recipe: dict[str, Any]) -> TrainConfig:
    """The recipe's `[train]` section as a checked `TrainConfig` (missing keys take defaults)."""
    return dataclass_from_dict(TrainConfig, recipe.get("train", {}), section="train")


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warm-up, then constant."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr
