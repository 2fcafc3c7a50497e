"""The `[train]` section every recipe shares; family sections are read by the family itself.

A recipe TOML looks like:

    family = "diffusion"
    [train]
    steps = 2000
    lr = 3e-4
    [train.optimizers.d]   # optional: one parameter group's own optimiser settings
    lr = 1e-4
    [model]            # family-specific sections, checked by the family's own dataclasses
    base_channels = 64
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gambar.config import check_range, dataclass_from_dict
from gambar.errors import InvalidInputError
from gambar.seeding import MAX_SEED

# What `[train.optimizers.<group>]` may change for one parameter group; the rest of [train] is
# shared by every group.
OPTIMIZER_KEYS = ("lr", "betas", "weight_decay", "warmup_steps", "decay_steps", "min_lr_ratio",
                  "grad_clip")


@dataclass(frozen=True)
class GroupOptimizer:
    """`[train.optimizers.<group>]`: one parameter group's optimiser and LR schedule settings,
    each falling back to [train]'s when unset (a GAN's discriminator with its own lr)."""

    lr: float | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None
    warmup_steps: int | None = None
    decay_steps: int | None = None
    min_lr_ratio: float | None = None
    grad_clip: float | None = None

    def given(self) -> dict[str, Any]:
        """The settings this table sets."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class OptimizerTables:
    """`[train.optimizers]`: its keys are the family's parameter group names (checked when the
    task is built), each a `GroupOptimizer` table; this empty class names the section for --set."""


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
    # Parameter group name -> what its optimiser changes of the above (OPTIMIZER_KEYS); a group
    # not named here uses [train]'s settings. Names are checked against the task's groups.
    optimizers: dict[str, GroupOptimizer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            _check_range(name, getattr(self, name), 1, MAX_COUNT)
        for name in ("ema_start", "sample_every"):
            _check_range(name, getattr(self, name), 0, MAX_COUNT)
        _check_range("batch_size", self.batch_size, 1, MAX_BATCH)
        _check_range("seed", self.seed, 0, MAX_SEED)
        _check_range("ema_decay", self.ema_decay, 0.0, 1.0, high_open=True)
        _check_range("max_minutes", self.max_minutes, 0.0, math.inf)
        defaults = {k: getattr(self, k) for k in OPTIMIZER_KEYS}
        _check_optimizer(defaults, self.steps, "train")
        if not self.run_dir.strip():
            raise InvalidInputError("train.run_dir is empty; name a directory, e.g. runs/mine")
        tables = {}
        for group, table in self.optimizers.items():
            where = f"train.optimizers.{group}"
            if isinstance(table, GroupOptimizer):
                tables[group] = table
            else:  # a recipe's table, read here: dataclass_from_dict leaves dict values as given
                tables[group] = dataclass_from_dict(GroupOptimizer, table, section=where)
            _check_optimizer({**defaults, **tables[group].given()}, self.steps, where)
        object.__setattr__(self, "optimizers", tables)  # frozen: set once, here

    def group(self, name: str) -> TrainConfig:
        """These settings with parameter group `name`'s `[train.optimizers.<name>]` applied:
        what its optimiser, LR schedule (`lr_at`) and gradient clipping use."""
        table = self.optimizers.get(name)
        if table is None:
            return self
        return dataclasses.replace(self, optimizers={}, **table.given())

    def check_groups(self, names: Iterable[str]) -> None:
        """Refuse a `[train.optimizers.<group>]` for a group the task does not have."""
        names = list(names)
        for group in self.optimizers:
            if group not in names:
                close = difflib.get_close_matches(group, names, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise InvalidInputError(
                    f"[train.optimizers.{group}] names no parameter group of this family; {hint}"
                    f"its groups are {', '.join(names)}")


# Upper bounds that no real run reaches; they keep absurd values (steps = 1e18) out of the loop.
MAX_COUNT = 10**9
MAX_BATCH = 65_536


def _check_range(name: str, value: float, low: float, high: float, *,
                 low_open: bool = False, high_open: bool = False) -> None:
    check_range(f"train.{name}", value, low, high, low_open=low_open, high_open=high_open)


def _check_optimizer(values: Mapping[str, Any], steps: int, where: str) -> None:
    """Ranges of one optimiser's settings (OPTIMIZER_KEYS), named as `where`.<key>."""
    def check(key: str, value: float, low: float, high: float, **open_: bool) -> None:
        check_range(f"{where}.{key}", value, low, high, **open_)

    for key in ("warmup_steps", "decay_steps"):
        check(key, values[key], 0, MAX_COUNT)
    # A learning rate above 1 only ever diverges with AdamW (updates are ~lr per weight).
    check("lr", values["lr"], 0.0, 1.0, low_open=True)
    check("weight_decay", values["weight_decay"], 0.0, 1.0)
    check("min_lr_ratio", values["min_lr_ratio"], 0.0, 1.0)
    check("grad_clip", values["grad_clip"], 0.0, math.inf)
    for i, beta in enumerate(values["betas"]):
        check(f"betas[{i}]", beta, 0.0, 1.0, high_open=True)
    warmup, decay = values["warmup_steps"], values["decay_steps"]
    if decay and decay + warmup > steps:
        raise InvalidInputError(
            f"{where}.warmup_steps + {where}.decay_steps ({warmup} + {decay}) must not exceed "
            f"train.steps ({steps})")


class OverrideSchema(Mapping[str, type]):
    """The dataclass behind each recipe section that `--set` may add keys to (for
    `gambar.config.apply_overrides`): [train], [train.optimizers], every
    [train.optimizers.<group>] (whatever the group's name: it is checked when the task is
    built), and the family's own `SCHEMA` sections."""

    def __init__(self, family: Mapping[str, type]) -> None:
        self._fixed = {"train": TrainConfig, "train.optimizers": OptimizerTables, **family}

    def __getitem__(self, section: str) -> type:
        if section in self._fixed:
            return self._fixed[section]
        parent, _, group = section.rpartition(".")
        if parent == "train.optimizers" and group:
            return GroupOptimizer
        raise KeyError(section)

    def __iter__(self) -> Iterator[str]:
        return iter(self._fixed)

    def __len__(self) -> int:
        return len(self._fixed)


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
