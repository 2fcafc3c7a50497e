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

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gambar.config import check_range, dataclass_from_dict
from gambar.errors import InvalidInputError
from gambar.seeding import MAX_SEED


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
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            _check_range(name, getattr(self, name), 1, MAX_COUNT)
        for name in ("warmup_steps", "decay_steps", "ema_start", "sample_every"):
            _check_range(name, getattr(self, name), 0, MAX_COUNT)
        _check_range("batch_size", self.batch_size, 1, MAX_BATCH)
        _check_range("seed", self.seed, 0, MAX_SEED)
        # A learning rate above 1 only ever diverges with AdamW (updates are ~lr per weight).
        _check_range("lr", self.lr, 0.0, 1.0, low_open=True)
        _check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        _check_range("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        _check_range("ema_decay", self.ema_decay, 0.0, 1.0, high_open=True)
        _check_range("grad_clip", self.grad_clip, 0.0, math.inf)
        _check_range("max_minutes", self.max_minutes, 0.0, math.inf)
        for i, beta in enumerate(self.betas):
            _check_range(f"betas[{i}]", beta, 0.0, 1.0, high_open=True)
        if self.decay_steps and self.decay_steps + self.warmup_steps > self.steps:
            raise InvalidInputError(
                f"train.warmup_steps + train.decay_steps ({self.warmup_steps} + "
                f"{self.decay_steps}) must not exceed train.steps ({self.steps})")
        if not self.run_dir.strip():
            raise InvalidInputError("train.run_dir is empty; name a directory, e.g. runs/mine")


# Upper bounds that no real run reaches; they keep absurd values (steps = 1e18) out of the loop.
MAX_COUNT = 10**9
MAX_BATCH = 65_536


def _check_range(name: str, value: float, low: float, high: float, *,
                 low_open: bool = False, high_open: bool = False) -> None:
    check_range(f"train.{name}", value, low, high, low_open=low_open, high_open=high_open)


# Top-level keys every recipe may set besides its sections.
RECIPE_KEYS = ("family", "name")


def check_sections(recipe: Mapping[str, Any], sections: Iterable[str]) -> None:
    """Refuse what the family does not read: a misspelt `[trian]` would otherwise be ignored and
    the run would train 1000 default steps. `sections` are the family's own (besides [train])."""
    if not isinstance(recipe, Mapping):
        raise InvalidInputError(f"a recipe must be a table of sections, got {recipe!r}")
    tables = ("train", *sections)
    for key, value in recipe.items():
        if key in RECIPE_KEYS:
            if not isinstance(value, str) or not value.strip():
                raise InvalidInputError(f"recipe key '{key}' must be a non-empty string, "
                                        f"got {value!r}")
        elif key in tables:
            if not isinstance(value, Mapping):
                raise InvalidInputError(f"recipe section [{key}] must be a table, got {value!r}")
        else:
            what = f"section [{key}]" if isinstance(value, Mapping) else f"key '{key}'"
            close = difflib.get_close_matches(key, [*tables, *RECIPE_KEYS], n=1)
            hint = ""
            if close:
                hint = "did you mean " + (f"[{close[0]}]" if close[0] in tables
                                          else f"'{close[0]}'") + "? "
            raise InvalidInputError(
                f"unknown recipe {what}; {hint}this family reads the sections "
                f"{', '.join(f'[{t}]' for t in tables)} and the keys {', '.join(RECIPE_KEYS)}")


def text_section(section: Mapping[str, Any], default_kind: str) -> tuple[str, dict[str, Any]]:
    """`[text]`, which every family reads the same way: (kind, the small encoder's sizes).

    Checked here, before captions are gathered and an encoder built, so that a misspelt size is
    a one-line error naming it rather than a TypeError deep in the encoder.
    """
    from gambar.text.setup import KINDS
    from gambar.text.small import SmallTextConfig

    sizes = dict(section)
    kind = sizes.pop("kind", default_kind)
    if kind not in KINDS:
        raise InvalidInputError(f"text.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind != "small" and sizes:
        raise InvalidInputError(f"text.{next(iter(sizes))} does not apply to text.kind = "
                                f"{kind!r}; only a small (trainable) encoder has sizes")
    if kind == "small":  # vocab_size is the tokenizer's target; the encoder takes what it gets
        dataclass_from_dict(SmallTextConfig, {"vocab_size": 1000, **sizes}, section="text")
    return kind, sizes


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
