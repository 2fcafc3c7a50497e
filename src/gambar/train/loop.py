"""The shared training loop: one explicit `for` over steps, run through accelerate.

One process on CPU by default; `accelerate launch --multi_gpu --num_processes N` runs N DDP
replicas (gloo on CPU, NCCL on GPUs). Every rank keeps an identical EMA; the main process writes
samples, logs, checkpoints and the exported model. Resuming replays the data stream and every RNG,
so an interrupted-and-resumed run ends bit-identical to an uninterrupted one on CPU.

A task names its parameter groups (one AdamW and LR schedule each, `[train]` overridden per group
by `[train.optimizers.<group>]`); each step applies the updates `task.step` yields in order. The
log has "loss/<group>" per group, the task's named figures, and "loss", the sum of the groups'
losses: for a one-group task the loss itself, as before groups existed.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, send_to_device
from tqdm.auto import tqdm

from gambar.errors import GambarError, InvalidInputError
from gambar.fsutil import atomic_write_bytes, atomic_write_text, replace_dir
from gambar.model_dir import CONFIG, MANIFEST, is_component_file
from gambar.text.setup import TOKENIZER_FILE
from gambar.train.checkpoint import (
    CHECKPOINT_TMP,
    GROUP_NAME,
    CheckpointState,
    capture_rng,
    checkpoint_dir,
    is_checkpoint_file,
    load_checkpoint,
    nonfinite_tensor,
    restore_rng,
    save_checkpoint,
)
from gambar.train.ema import ema_scope, ema_update, make_ema
from gambar.train.recipe import TrainConfig, check_sections, lr_at, train_config
from gambar.train.task import TrainingTask

TaskFactory = Callable[[dict[str, Any]], TrainingTask]
MODEL_TMP = ".model.tmp"  # the export is written here, then swapped in as run_dir/model


@dataclass(frozen=True)
class Groups:
    """The task's parameter groups, checked: each one's parameters and settings ([train] with
    its `[train.optimizers.<group>]`), and where the EMA averages (`ema_scope`)."""

    params: dict[str, list[torch.nn.Parameter]]
    settings: dict[str, TrainConfig]
    ema_scope: str | None

    @property
    def several(self) -> bool:
        """Whether the task has more than one parameter group (a GAN's G and D)."""
        return len(self.params) > 1


@dataclass(frozen=True)
class Run:
    """What the loop's helpers share: the task, its settings and the objects being trained."""

    task: TrainingTask
    cfg: TrainConfig
    groups: Groups
    accelerator: Accelerator
    prepared: torch.nn.Module  # what accelerate returned (DDP-wrapped when distributed)
    model: torch.nn.Module  # the bare module: EMA source, checkpointed weights
    ema: torch.nn.Module
    optimizers: dict[str, torch.optim.Optimizer]  # group name -> its optimizer, prepared
    generator: torch.Generator  # the loss's randomness; per rank, checkpointed

    @property
    def run_dir(self) -> Path:
        """Where checkpoints, samples, logs and the export go."""
        return Path(self.cfg.run_dir)

    @property
    def is_main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.accelerator.is_main_process


def train(
    task_factory: TaskFactory,
    recipe: dict[str, Any],
    *,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train the task `task_factory(recipe)` builds; return the exported model, run_dir/model.

    A factory that declares `SECTIONS` (every registered family does) has the recipe's sections
    checked against them first, so a misspelt section is an error rather than ignored.
    """
    sections = getattr(task_factory, "SECTIONS", None)
    if sections is not None:
        check_sections(recipe, sections)
    cfg = train_config(recipe)
    found = check_run_dir(Path(cfg.run_dir), resume)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    task = task_factory(recipe)
    groups = parameter_groups(task, cfg)
    # Several groups: a step's forward passes leave some parameters without gradient (the
    # discriminator's update does not reach the generator when its images are detached), which
    # DDP refuses unless told to look for them. One group keeps DDP's faster default.
    handlers = ([DistributedDataParallelKwargs(find_unused_parameters=True)]
                if groups.several else [])
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              mixed_precision=cfg.mixed_precision, kwargs_handlers=handlers)
    try:
        return _run(task, groups, recipe, cfg, found, accelerator, progress=progress)
    finally:
        # accelerate keeps its settings in a process-wide singleton that refuses a second
        # Accelerator with another mixed_precision; forget them so train() can be called again.
        AcceleratorState._reset_state()


def parameter_groups(task: TrainingTask, cfg: TrainConfig) -> Groups:
    """The task's parameter groups, checked against its model and the recipe.

    A family mistake (groups that overlap, a trainable parameter in none, an EMA target outside
    the model) is a ValueError; a `[train.optimizers.<group>]` naming no group is the user's.
    """
    model = task.model
    names = {id(p): name for name, p in model.named_parameters()}
    owner: dict[int, str] = {}
    params: dict[str, list[torch.nn.Parameter]] = {}
    for group, members in task.param_groups(model).items():
        if not isinstance(group, str) or not GROUP_NAME.fullmatch(group):
            raise ValueError(f"parameter group name {group!r} must match {GROUP_NAME.pattern}")
        params[group] = list(members)
        if not params[group]:
            raise ValueError(f"parameter group '{group}' has no parameters")
        for p in params[group]:
            if id(p) not in names:
                raise ValueError(f"parameter group '{group}' holds a tensor that is not a "
                                 "parameter of the task's model (it would not be checkpointed)")
            if id(p) in owner:
                raise ValueError(f"parameter '{names[id(p)]}' is in parameter groups "
                                 f"'{owner[id(p)]}' and '{group}'; groups must not overlap")
            owner[id(p)] = group
    if not params:
        raise ValueError("the task's param_groups returned no group")
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in owner:
            raise ValueError(f"trainable parameter '{name}' is in no parameter group; add it to "
                             "one, or set requires_grad=False if it is not to be trained")
    cfg.check_groups(params)
    return Groups(params, {g: cfg.group(g) for g in params},
                  ema_scope(model, task.ema_target(model)))


def _run(
    task: TrainingTask,
    groups: Groups,
    recipe: dict[str, Any],
    cfg: TrainConfig,
    found: RunDirCheck,
    accelerator: Accelerator,
    *,
    progress: bool,
) -> Path:
    run_dir = Path(cfg.run_dir)
    rank, world = accelerator.process_index, accelerator.num_processes
    accelerator.wait_for_everyone()  # every rank checks before the main one creates files

    model = task.model
    ema = make_ema(model)
    optimizers = {
        group: torch.optim.AdamW(groups.params[group], lr=settings.lr, betas=settings.betas,
                                 weight_decay=settings.weight_decay)
        for group, settings in groups.settings.items()
    }
    generator = torch.Generator()  # CPU, as STYLE §6: the loss's noise, timesteps, dropout
    if found.resume:
        state = _resume_state(run_dir, recipe, model, ema, optimizers, generator, accelerator)
    else:
        state = CheckpointState(0, 0, 0.0, world, recipe)
        seed_process(cfg.seed, rank, generator)
        if accelerator.is_main_process:
            if found.note:
                print(found.note, file=sys.stderr)
            for path in found.leftovers:  # only now: a recipe error above must not delete them
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            run_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()

    prepared, *wrapped = accelerator.prepare(model, *optimizers.values())
    ema.to(accelerator.device)
    run = Run(task, cfg, groups, accelerator, prepared, model, ema,
              dict(zip(optimizers, wrapped, strict=True)), generator)
    final_loss = _loop(run, state, progress=progress)
    if accelerator.is_main_process:
        _export(run, _summary(cfg, state, world, final_loss))
    accelerator.wait_for_everyone()
    return run_dir / "model"


class RunDirCheck(NamedTuple):
    """What `check_run_dir` decided: resume from the checkpoint or start at step 0 (replacing
    `leftovers`), and the line that tells the user which."""

    resume: bool
    leftovers: list[Path]
    note: str | None


def check_run_dir(run_dir: Path, resume: bool) -> RunDirCheck:
    """Refuse to resume nothing and to start a fresh run over an existing one.

    A directory holding only what a run writes before its first checkpoint (log.jsonl, samples,
    temporary files) may be started again, with or without --resume: from step 0 either way.
    The note says which happens (one line).
    """
    ckpt = checkpoint_dir(run_dir)
    if ckpt is not None:
        if not resume:
            raise GambarError(
                f"{run_dir} already holds a training run; pass --resume to continue it, "
                "or set train.run_dir to a new directory"
            )
        return RunDirCheck(True, [], None)
    if not run_dir.exists():
        if resume:
            raise InvalidInputError(
                f"cannot resume: {run_dir} does not exist (no checkpoint); start the run "
                "without --resume, or check train.run_dir"
            )
        return RunDirCheck(False, [], None)
    if not run_dir.is_dir():
        raise InvalidInputError(f"train.run_dir {run_dir} is a file; name a directory")
    entries = sorted(run_dir.iterdir())
    foreign = [p.name for p in entries if not _is_leftover(p)]
    if foreign:
        what = "cannot resume: " if resume else ""
        raise GambarError(
            f"{what}{run_dir} is not empty and holds no checkpoint ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}); set train.run_dir to a new directory or "
            "remove this one"
        )
    note = None
    if resume:
        note = (f"note: {run_dir} has no checkpoint (its run stopped before the first one): "
                "starting from step 0 and replacing its logs/samples")
    elif entries:
        note = (f"note: {run_dir} holds only the logs/samples of a run that stopped before its "
                "first checkpoint: starting afresh and replacing them")
    return RunDirCheck(False, entries, note)


# What a run writes before its first checkpoint, by name, with the shape the run gives it; a
# directory of nothing else may be started again. Anything else (a link, a folder named like a
# file, a file the run never writes) may be the user's, and the run refuses rather than delete it.
_MODEL_FILES = frozenset((CONFIG, MANIFEST, TOKENIZER_FILE))  # and each component's weights
_SAMPLE = re.compile(r"step_\d+\.png")
_TEMPORARY = re.compile(r"\.(.+)\.[a-z0-9_]+\.tmp")  # atomic_write_bytes' ".<name>.x1y2z3.tmp"


def _plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _debris_of(path: Path, wanted: Callable[[str], bool]) -> bool:
    """Whether `path` is an interrupted atomic write of a file named as `wanted` accepts."""
    match = _TEMPORARY.fullmatch(path.name)
    return match is not None and bool(wanted(match[1])) and _plain_file(path)


def _holds_only(folder: Path, wanted: Callable[[str], bool]) -> bool:
    """Whether `folder` is a real directory of plain files named as `wanted` accepts (or their
    interrupted atomic writes)."""
    if not folder.is_dir() or folder.is_symlink():
        return False
    return all((_plain_file(p) and bool(wanted(p.name))) or _debris_of(p, wanted)
               for p in folder.iterdir())


def _is_leftover(path: Path) -> bool:
    name = path.name
    if name == "log.jsonl":
        return _plain_file(path)
    if name == "samples":
        return _holds_only(path, _SAMPLE.fullmatch)
    if name == CHECKPOINT_TMP:
        return _holds_only(path, is_checkpoint_file)
    if name == MODEL_TMP:
        return _holds_only(path, lambda name: name in _MODEL_FILES or is_component_file(name))
    return _debris_of(path, "log.jsonl".__eq__)  # _truncate_log's interrupted rewrite


def seed_process(seed: int, rank: int, generator: torch.Generator) -> None:
    """Seed this rank's loss generator and global RNGs from (seed, rank), independently."""
    # SeedSequence gives well-separated streams; seed + rank would make rank 1 of seed 0
    # replay rank 0 of seed 1.
    words = np.random.SeedSequence([seed, rank]).generate_state(4, dtype=np.uint64).tolist()
    generator.manual_seed(words[0])
    torch.manual_seed(words[1])
    random.seed(words[2])
    np.random.seed(words[3] % 2**32)


def _resume_state(
    run_dir: Path,
    recipe: dict[str, Any],
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    generator: torch.Generator,
    accelerator: Accelerator,
) -> CheckpointState:
    """Load the checkpoint into model/EMA/optimizers and this rank's RNGs; warn on recipe edits."""
    state = load_checkpoint(run_dir, model, ema, optimizers)
    if state.world_size != accelerator.num_processes:
        raise InvalidInputError(
            f"{run_dir} was trained with {state.world_size} processes, this run has "
            f"{accelerator.num_processes}; resume with --num_processes {state.world_size} "
            "(the data stream and RNG states are per process)"
        )
    steps = train_config(recipe).steps
    if state.step > steps:
        raise InvalidInputError(
            f"{run_dir} is already at step {state.step}, past train.steps={steps}"
        )
    restore_rng(state.rng, generator, rank=accelerator.process_index)
    if accelerator.is_main_process:
        changed = recipe_changes(state.recipe, recipe)
        if changed:
            print(f"warning: resuming with a changed recipe: {'; '.join(changed)}", file=sys.stderr)
        _truncate_log(run_dir / "log.jsonl", state.step)
    state.recipe = recipe
    return state


def recipe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Recipe keys that differ ("train.lr: 0.001 -> 0.0003"), ignoring steps and run_dir."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    ignored = {"train.steps", "train.run_dir"}
    keys = sorted((set(flat_old) | set(flat_new)) - ignored)
    return [
        f"{k}: {flat_old.get(k, '<unset>')} -> {flat_new.get(k, '<unset>')}"
        for k in keys
        if flat_old.get(k) != flat_new.get(k)
    ]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint: the resumed run logs those steps again."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line half-written when the process died
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


# ------------------------------------------------------------------------------------- loop


def _loop(run: Run, state: CheckpointState, *, progress: bool) -> float | None:
    """Train from `state.step` to `cfg.steps`, updating `state`; return the last logged loss
    (the sum of the groups' losses)."""
    cfg, accelerator = run.cfg, run.accelerator
    batches = run.task.batches(
        start=state.data_position,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        batch_size=cfg.batch_size,
    )
    bar = tqdm(
        total=cfg.steps,
        initial=state.step,
        desc="train",
        unit="step",
        dynamic_ncols=True,
        disable=not (progress and run.is_main),
    )
    window: list[dict[str, torch.Tensor]] = []  # each step's figures until they are logged
    last_loss = None
    saved = state.step or None  # the last good checkpoint's step (a resumed run starts at one)
    start_wall, t0 = state.wall_time, time.monotonic()
    with bar, graceful_stop() as stop_requested:
        for step in range(state.step, cfg.steps):
            batch = send_to_device(next(batches), accelerator.device)
            figures = train_step(run, step, batch)
            bad = _nonfinite_loss(run, figures)
            # One reduce per step serves both flags, so that every rank stops together.
            stop, diverged = _any_rank(accelerator, stop_requested(), bad is not None)
            if diverged:
                if bad is None:
                    raise _diverged(run, step + 1, "the loss is not finite on another process",
                                    saved)
                group, value = bad
                where = f" (parameter group '{group}')" if run.groups.several else ""
                raise _diverged(run, step + 1, f"the loss is {value}{where}", saved, group)
            window.append(figures)
            ema_update(run.ema, run.model, 0.0 if step < cfg.ema_start else cfg.ema_decay,
                       run.groups.ema_scope)
            state.step, state.data_position = step + 1, state.data_position + 1
            state.wall_time = start_wall + time.monotonic() - t0
            bar.update(1)
            done = state.step
            if done % cfg.log_every == 0 or done == cfg.steps:
                line = _log(run, window, step, state)
                last_loss = line["loss"]
                bar.set_postfix(_postfix(run, line))
                window = []
            if cfg.sample_every and done % cfg.sample_every == 0 and run.is_main:
                save_samples(run.task, run.ema, run.run_dir, done)
            # A wall-time budget (equal-time comparisons, "train for an hour"): every rank stops
            # at the same step once any rank's total time, resumed parts included, is spent.
            # (The config is the same on every rank, so without a budget no rank reduces.)
            spent = bool(cfg.max_minutes) and _any_rank(
                accelerator, state.wall_time >= cfg.max_minutes * 60)[0]
            if spent and window:
                last_loss = _log(run, window, step, state)["loss"]
                window = []
            if done % cfg.checkpoint_every == 0 or done == cfg.steps or stop or spent:
                _checkpoint(run, state, saved)
                saved = done
            if spent and not stop:
                bar.write(f"time budget of {cfg.max_minutes:g} min spent at step {done}: "
                          "exporting the model (raise train.max_minutes and --resume to go on)")
                break
            if stop:
                bar.write(
                    f"interrupted: checkpoint saved at step {done} in {run.run_dir}; "
                    "continue with --resume"
                )
                raise KeyboardInterrupt
    return last_loss


# Log keys the loop writes itself; a task's figures must be named otherwise.
_RESERVED = ("step", "loss", "lr", "time")


def train_step(run: Run, step: int, batch: Any) -> dict[str, torch.Tensor]:
    """Apply the updates `task.step` yields for one batch, in order; return this step's figures
    (detached): "loss/<group>" and the updates' logs, each the mean over the step's updates."""
    figures: dict[str, list[torch.Tensor]] = {}
    updates = run.task.step(run.prepared, batch, run.generator, step)
    while True:
        with run.accelerator.autocast():  # the task's forward passes run inside next()
            update = next(updates, None)
        if update is None:
            break
        group = update.group
        optimizer = run.optimizers.get(group)
        if optimizer is None:
            raise ValueError(f"task.step yielded an update of parameter group {group!r}; its "
                             f"param_groups are {', '.join(run.optimizers)}")
        settings = run.groups.settings[group]
        for param_group in optimizer.param_groups:
            # from the step, so resuming needs no scheduler state
            param_group["lr"] = lr_at(settings, step)
        run.accelerator.backward(update.loss)
        if settings.grad_clip > 0:
            run.accelerator.clip_grad_norm_(run.groups.params[group], settings.grad_clip)
        optimizer.step()
        # Every gradient, not only this group's: the discriminator's loss also reaches the
        # generator, and those gradients must not leak into the generator's own update.
        run.model.zero_grad(set_to_none=True)
        figures.setdefault(f"loss/{group}", []).append(update.loss.detach().float())
        for name, value in update.logs.items():
            if name in _RESERVED or name.startswith(("loss/", "lr/")):
                raise ValueError(f"an update's log name {name!r} is one the loop writes itself")
            figures.setdefault(name, []).append(value.detach().float().reshape(()))
    if not figures:
        raise ValueError(f"task.step yielded no update at step {step}")
    return {name: values[0] if len(values) == 1 else torch.stack(values).mean()
            for name, values in figures.items()}


def _nonfinite_loss(run: Run, figures: dict[str, torch.Tensor]) -> tuple[str, float] | None:
    """The parameter group of this step's first update (in the order applied) whose loss is NaN
    or inf, with that loss, or None. Later groups' losses follow from its NaN weights."""
    for name, loss in figures.items():
        group = name.removeprefix("loss/")
        if group in run.groups.params and not math.isfinite(value := loss.item()):
            return group, value
    return None


def _log(run: Run, window: list[dict[str, torch.Tensor]], step: int,
         state: CheckpointState) -> dict[str, Any]:
    """Append the window's figures, each a mean over its steps and all ranks, to log.jsonl;
    return the line. Every rank must call this (one reduce for all figures)."""
    names = sorted({name for figures in window for name in figures})  # the same on every rank
    means = torch.stack([torch.stack([f[name] for f in window if name in f]).mean()
                         for name in names])
    values = dict(zip(names, run.accelerator.reduce(means, reduction="mean").tolist(),
                      strict=True))
    losses = {f"loss/{g}": values.pop(f"loss/{g}") for g in run.groups.params
              if f"loss/{g}" in values}
    line = {
        "step": state.step,
        "loss": sum(losses.values()),
        **losses,
        **values,
        "lr": lr_at(run.cfg, step),
        **{f"lr/{g}": lr_at(settings, step) for g, settings in run.groups.settings.items()},
        "time": round(state.wall_time, 3),
    }
    if run.is_main:
        with (run.run_dir / "log.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
    return line


def _postfix(run: Run, line: dict[str, Any]) -> dict[str, str]:
    """The progress bar's figures: the loss (each group's when several), the task's logs."""
    if run.groups.several:
        shown = {g: line[f"loss/{g}"] for g in run.groups.params if f"loss/{g}" in line}
    else:
        shown = {"loss": line["loss"]}
    shown.update({k: v for k, v in line.items()
                  if k not in _RESERVED and not k.startswith(("loss/", "lr/"))})
    return {name: f"{value:.4g}" for name, value in shown.items()}


def _any_rank(accelerator: Accelerator, *flags: bool) -> list[bool]:
    """Each flag, true on every rank if it is true on any: all ranks then stop, save or fail at
    the same step together. One reduce for all the flags (none on a single process)."""
    if accelerator.num_processes == 1:
        return list(flags)
    tensor = torch.tensor([float(f) for f in flags], device=accelerator.device)
    return [v > 0 for v in accelerator.reduce(tensor, reduction="sum").tolist()]


def _diverged(run: Run, step: int, what: str, saved: int | None,
              group: str | None = None) -> GambarError:
    """The one-line error that ends a run whose loss or weights stopped being finite."""
    kept = (f"the last good checkpoint (step {saved}) is kept in {run.run_dir}"
            if saved is not None else "no checkpoint was written")
    key, lr = "train", run.cfg.lr
    if group is not None and group in run.cfg.optimizers:
        key, lr = f"train.optimizers.{group}", run.groups.settings[group].lr
    return GambarError(
        f"training diverged at step {step}: {what}; nothing from that step was saved and {kept}; "
        f"lower {key}.lr (now {lr:g}) or raise {key}.warmup_steps and start again"
        + (" with --resume" if saved is not None else "")
    )


@contextlib.contextmanager
def graceful_stop() -> Iterator[Callable[[], bool]]:
    """Turn the first SIGINT/SIGTERM into a request to stop after the current step.

    A KeyboardInterrupt raised mid-step could land between backward and the optimizer update,
    leaving nothing consistent to checkpoint. A second signal interrupts at once.
    """
    requested = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal requested
        if requested:
            raise KeyboardInterrupt
        requested = True

    if threading.current_thread() is not threading.main_thread():
        yield lambda: False  # signal handlers can only be installed from the main thread
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ------------------------------------------------------------------------- side outputs


def _checkpoint(run: Run, state: CheckpointState, saved: int | None) -> None:
    """Gather every rank's RNG states and let the main process write the checkpoint.

    Weights are checked here, not every step (a scan of every tensor): a checkpoint, and so the
    export that always follows one at the same step, never holds NaN or inf.
    """
    bad = nonfinite_tensor(run.model, run.ema, run.optimizers)
    if _any_rank(run.accelerator, bad is not None)[0]:
        raise _diverged(run, state.step, f"{bad or 'a weight on another process'} is not finite",
                        saved)
    state.rng = gather_rng(run.accelerator, capture_rng(run.generator))
    if run.is_main:
        save_checkpoint(run.run_dir, state, run.model, run.ema, run.optimizers)
    run.accelerator.wait_for_everyone()


def gather_rng(accelerator: Accelerator, rng: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stack each RNG state over ranks: (world_size, ...) on CPU."""
    if accelerator.num_processes == 1:
        return {name: t.unsqueeze(0) for name, t in rng.items()}
    return {
        name: accelerator.gather(t.to(accelerator.device).unsqueeze(0)).cpu()
        for name, t in rng.items()
    }


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run side work (sampling, export) without moving the training RNG streams."""
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def save_samples(task: TrainingTask, ema: torch.nn.Module, run_dir: Path, step: int) -> Path:
    """Write the task's sample grid from the EMA model to samples/step_XXXXXX.png."""
    with isolated_rng(), torch.no_grad():
        image = task.sample_grid(ema)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    path = run_dir / "samples" / f"step_{step:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _summary(
    cfg: TrainConfig, state: CheckpointState, world: int, final_loss: float | None
) -> dict[str, Any]:
    return {
        "steps": state.step,
        "wall_time_s": round(state.wall_time, 3),
        "num_processes": world,
        "global_batch_size": cfg.batch_size * world,
        "final_loss": final_loss,
        "recipe": state.recipe,
    }


def _export(run: Run, summary: dict[str, Any]) -> None:
    """Export the EMA model to run_dir/model, swapped in whole so a crash never leaves half."""
    tmp = run.run_dir / MODEL_TMP
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    with isolated_rng(), torch.no_grad():
        run.task.export(run.ema, tmp, summary)
    replace_dir(tmp, run.run_dir / "model")
