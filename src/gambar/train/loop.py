"""The shared training loop: one explicit `for` over steps, run through accelerate.

One process on CPU by default; `accelerate launch --multi_gpu --num_processes N` runs N DDP
replicas (gloo on CPU, NCCL on GPUs). Every rank keeps an identical EMA; the main process writes
samples, logs, checkpoints and the exported model. Resuming replays the data stream and every RNG,
so an interrupted-and-resumed run ends bit-identical to an uninterrupted one on CPU.
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
from accelerate.utils import send_to_device
from tqdm.auto import tqdm

from gambar.errors import GambarError, InvalidInputError
from gambar.fsutil import atomic_write_bytes, atomic_write_text, replace_dir
from gambar.model_dir import CONFIG, MANIFEST, WEIGHTS
from gambar.text.setup import TOKENIZER_FILE
from gambar.train import checkpoint
from gambar.train.checkpoint import (
    CHECKPOINT_TMP,
    CheckpointState,
    capture_rng,
    checkpoint_dir,
    load_checkpoint,
    nonfinite_tensor,
    restore_rng,
    save_checkpoint,
)
from gambar.train.ema import ema_update, make_ema
from gambar.train.recipe import TrainConfig, check_sections, lr_at, train_config
from gambar.train.task import TrainingTask

TaskFactory = Callable[[dict[str, Any]], TrainingTask]
MODEL_TMP = ".model.tmp"  # the export is written here, then swapped in as run_dir/model


@dataclass(frozen=True)
class Run:
    """What the loop's helpers share: the task, its settings and the objects being trained."""

    task: TrainingTask
    cfg: TrainConfig
    accelerator: Accelerator
    prepared: torch.nn.Module  # what accelerate returned (DDP-wrapped when distributed)
    model: torch.nn.Module  # the bare module: EMA source, checkpointed weights
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
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
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision
    )
    try:
        return _run(task_factory, recipe, cfg, accelerator, resume=resume, progress=progress)
    finally:
        # accelerate keeps its settings in a process-wide singleton that refuses a second
        # Accelerator with another mixed_precision; forget them so train() can be called again.
        AcceleratorState._reset_state()


def _run(
    task_factory: TaskFactory,
    recipe: dict[str, Any],
    cfg: TrainConfig,
    accelerator: Accelerator,
    *,
    resume: bool,
    progress: bool,
) -> Path:
    run_dir = Path(cfg.run_dir)
    rank, world = accelerator.process_index, accelerator.num_processes
    found = check_run_dir(run_dir, resume)
    accelerator.wait_for_everyone()  # every rank checks before the main one creates files

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    task = task_factory(recipe)
    model = task.model
    ema = make_ema(model)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
    )
    generator = torch.Generator()  # CPU, as STYLE §6: the loss's noise, timesteps, dropout
    if found.resume:
        state = _resume_state(run_dir, recipe, model, ema, optimizer, generator, accelerator)
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

    prepared, optimizer = accelerator.prepare(model, optimizer)
    ema.to(accelerator.device)
    run = Run(task, cfg, accelerator, prepared, model, ema, optimizer, generator)
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
_CHECKPOINT_FILES = frozenset((*checkpoint.FILES, "state.json"))
_MODEL_FILES = frozenset((CONFIG, WEIGHTS, MANIFEST, TOKENIZER_FILE))
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
        return _holds_only(path, _CHECKPOINT_FILES.__contains__)
    if name == MODEL_TMP:
        return _holds_only(path, _MODEL_FILES.__contains__)
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
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    accelerator: Accelerator,
) -> CheckpointState:
    """Load the checkpoint into model/EMA/optimizer and this rank's RNGs; warn on recipe edits."""
    state = load_checkpoint(run_dir, model, ema, optimizer)
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
    """Train from `state.step` to `cfg.steps`, updating `state`; return the last logged loss."""
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
    window: list[torch.Tensor] = []
    last_loss = None
    saved = state.step or None  # the last good checkpoint's step (a resumed run starts at one)
    start_wall, t0 = state.wall_time, time.monotonic()
    with bar, graceful_stop() as stop_requested:
        for step in range(state.step, cfg.steps):
            batch = send_to_device(next(batches), accelerator.device)
            loss = train_step(run, step, batch)
            # One reduce per step serves both flags, so that every rank stops together.
            stop, diverged = _any_rank(accelerator, stop_requested(),
                                       not math.isfinite(loss.item()))
            if diverged:
                value = loss.item()
                what = ("the loss is not finite on another process" if math.isfinite(value)
                        else f"the loss is {value}")
                raise _diverged(run, step + 1, what, saved)
            window.append(loss)
            ema_update(run.ema, run.model, 0.0 if step < cfg.ema_start else cfg.ema_decay)
            state.step, state.data_position = step + 1, state.data_position + 1
            state.wall_time = start_wall + time.monotonic() - t0
            bar.update(1)
            done = state.step
            if done % cfg.log_every == 0 or done == cfg.steps:
                last_loss = _log(run, window, lr_at(cfg, step), state)
                bar.set_postfix(loss=f"{last_loss:.4g}")
                window = []
            if cfg.sample_every and done % cfg.sample_every == 0 and run.is_main:
                save_samples(run.task, run.ema, run.run_dir, done)
            # A wall-time budget (equal-time comparisons, "train for an hour"): every rank stops
            # at the same step once any rank's total time, resumed parts included, is spent.
            # (The config is the same on every rank, so without a budget no rank reduces.)
            spent = bool(cfg.max_minutes) and _any_rank(
                accelerator, state.wall_time >= cfg.max_minutes * 60)[0]
            if spent and window:
                last_loss = _log(run, window, lr_at(cfg, step), state)
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


def train_step(run: Run, step: int, batch: Any) -> torch.Tensor:
    """One optimizer step on one batch; return the detached loss."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr_at(run.cfg, step)  # from the step, so resuming needs no scheduler state
    with run.accelerator.autocast():
        loss = run.task.loss(run.prepared, batch, run.generator)
    run.accelerator.backward(loss)
    if run.cfg.grad_clip > 0:
        run.accelerator.clip_grad_norm_(run.prepared.parameters(), run.cfg.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss.detach().float()


def _log(run: Run, window: list[torch.Tensor], lr: float, state: CheckpointState) -> float:
    """Append the window's mean loss over all ranks to log.jsonl; every rank must call this."""
    mean = run.accelerator.reduce(torch.stack(window).mean(), reduction="mean")
    loss = float(mean.item())
    if run.is_main:
        line = {"step": state.step, "loss": loss, "lr": lr, "time": round(state.wall_time, 3)}
        with (run.run_dir / "log.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
    return loss


def _any_rank(accelerator: Accelerator, *flags: bool) -> list[bool]:
    """Each flag, true on every rank if it is true on any: all ranks then stop, save or fail at
    the same step together. One reduce for all the flags (none on a single process)."""
    if accelerator.num_processes == 1:
        return list(flags)
    tensor = torch.tensor([float(f) for f in flags], device=accelerator.device)
    return [v > 0 for v in accelerator.reduce(tensor, reduction="sum").tolist()]


def _diverged(run: Run, step: int, what: str, saved: int | None) -> GambarError:
    """The one-line error that ends a run whose loss or weights stopped being finite."""
    kept = (f"the last good checkpoint (step {saved}) is kept in {run.run_dir}"
            if saved is not None else "no checkpoint was written")
    return GambarError(
        f"training diverged at step {step}: {what}; nothing from that step was saved and {kept}; "
        f"lower train.lr (now {run.cfg.lr:g}) or raise train.warmup_steps and start again"
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
    bad = nonfinite_tensor(run.model, run.ema, run.optimizer)
    if _any_rank(run.accelerator, bad is not None)[0]:
        raise _diverged(run, state.step, f"{bad or 'a weight on another process'} is not finite",
                        saved)
    state.rng = gather_rng(run.accelerator, capture_rng(run.generator))
    if run.is_main:
        save_checkpoint(run.run_dir, state, run.model, run.ema, run.optimizer)
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
