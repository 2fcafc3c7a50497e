"""Atomic, pickle-free training checkpoints that resume a run bit for bit.

`run_dir/checkpoint/` holds safetensors for every tensor (model, EMA, each optimizer's state, RNG
states) and JSON for the rest. The optimizer of parameter group "model" (every single-optimizer
task's) is optimizer.safetensors + optimizer.json, the names of checkpoints written before groups
existed; any other group's is optimizer-<group>.safetensors + .json. `state.json` is written last
and records the sha256 of every other file, so a truncated or flipped file is caught on load. The
directory is built under a temporary name and swapped in only when complete
(`fsutil.replace_dir`): a crash leaves the previous checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gambar.config import nesting_depth
from gambar.errors import CorruptFileError, InvalidInputError
from gambar.fsutil import atomic_write_text, current_dir, fsync_dir, fsync_file, replace_dir
from gambar.train.recipe import TrainConfig

FORMAT = "gambar-checkpoint/1"
CHECKPOINT = "checkpoint"
CHECKPOINT_TMP = ".checkpoint.tmp"  # written here, then swapped in as run_dir/checkpoint
_HASH_CHUNK = 1 << 20
# A parameter group's name becomes part of a file name: keep it plain.
GROUP_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
SINGLE_GROUP = "model"  # the group whose files keep the names of one-optimizer checkpoints
_OPTIMIZER_FILE = re.compile(
    rf"optimizer(?:-(?P<group>{GROUP_NAME.pattern}))?\.(?:json|safetensors)")
# The files `_write_files` writes besides each optimizer's (`optimizer_files`).
FILES = ("ema.safetensors", "model.safetensors", "rng.safetensors")


@dataclass
class CheckpointState:
    """Everything besides module and optimizer tensors that a resumed run needs."""

    step: int  # optimizer steps completed
    data_position: int  # batches each rank has consumed (TrainingTask.batches' `start`)
    wall_time: float  # seconds of training so far, over all resumed segments
    world_size: int
    recipe: dict[str, Any]
    rng: dict[str, torch.Tensor] = field(default_factory=dict)  # each (world_size, ...): per rank


def optimizer_files(group: str) -> tuple[str, str]:
    """The (tensors, JSON) file names of parameter group `group`'s optimizer."""
    stem = "optimizer" if group == SINGLE_GROUP else f"optimizer-{group}"
    return f"{stem}.safetensors", f"{stem}.json"


def checkpoint_files(groups: Iterable[str]) -> list[str]:
    """Every file but state.json of a checkpoint of these parameter groups, sorted."""
    return sorted((*FILES, *(name for g in groups for name in optimizer_files(g))))


def is_checkpoint_file(name: str) -> bool:
    """Whether a checkpoint of some parameter groups holds a file named `name`."""
    if name in (*FILES, "state.json"):
        return True
    match = _OPTIMIZER_FILE.fullmatch(name)
    return match is not None and match["group"] != SINGLE_GROUP


def _groups_of(files: Iterable[str]) -> list[str] | None:
    """The parameter groups whose files these are, or None if they are no checkpoint's set."""
    files = sorted(files)
    groups = sorted({match["group"] or SINGLE_GROUP for name in files
                     if (match := _OPTIMIZER_FILE.fullmatch(name))})
    return groups if groups and files == checkpoint_files(groups) else None


def checkpoint_dir(run_dir: str | Path) -> Path | None:
    """The checkpoint directory to resume from, or None if the run has none."""
    return current_dir(Path(run_dir) / CHECKPOINT)


# ---------------------------------------------------------------------------------------- RNG


def capture_rng(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """This process's RNG states as tensors: the loss generator, torch, CUDA, numpy, python."""
    version, py_state, py_gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    rng = {
        "loss_generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "python": torch.tensor([version, *py_state], dtype=torch.int64),
        "python_gauss": torch.tensor([py_gauss is not None, py_gauss or 0.0], dtype=torch.float64),
        "numpy": torch.tensor([*np_keys.tolist(), np_pos, np_has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_gauss], dtype=torch.float64),
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    return rng


def restore_rng(rng: dict[str, torch.Tensor], generator: torch.Generator, rank: int = 0) -> None:
    """Put back the states `capture_rng` took; `rng` holds one row per rank, as checkpointed.

    States of the right shape but impossible values (an edited file) are a CorruptFileError.
    """
    try:
        _restore_row({name: t[rank] for name, t in rng.items()}, generator)
    except (ValueError, TypeError, RuntimeError, OverflowError, IndexError, KeyError) as e:
        raise CorruptFileError(f"checkpoint RNG states are not valid ({e})") from None


def _restore_row(row: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    generator.set_state(row["loss_generator"].clone())
    torch.set_rng_state(row["torch"].clone())
    if "cuda" in row and torch.cuda.is_available():
        torch.cuda.set_rng_state(row["cuda"].clone())
    py = row["python"].tolist()
    has_gauss, gauss = row["python_gauss"].tolist()
    random.setstate((py[0], tuple(py[1:]), gauss if has_gauss else None))
    keys = np.array(row["numpy"][:-2].tolist(), dtype=np.uint32)
    pos, np_has_gauss = row["numpy"][-2:].tolist()
    np.random.set_state(("MT19937", keys, pos, np_has_gauss, row["numpy_gauss"].item()))


# ---------------------------------------------------------------------------------- tensors


def _plain_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors; tied weights cloned, as safetensors refuses shared storage."""
    out, seen = {}, set()
    for name, value in state.items():
        t = value.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            t = t.clone()
        seen.add(ptr)
        out[name] = t
    return out


def _optimizer_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten optimizer.state_dict() into tensors (`state.<param>.<name>`) and JSON."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, per_param in sd["state"].items():
        for name, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    groups = []
    for g, group in enumerate(sd["param_groups"]):
        plain = {}
        for key, value in group.items():
            if torch.is_tensor(value):  # e.g. a tensor lr (used for capturable optimizers)
                tensors[f"param_groups.{g}.{key}"] = value
                plain[key] = {"tensor": f"param_groups.{g}.{key}"}
            else:
                plain[key] = value
        groups.append(plain)
    meta = {"param_groups": groups, "state_scalars": scalars}
    return _plain_tensors(tensors), meta


def _optimizer_state_dict(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> dict[str, Any]:
    """Rebuild a state_dict from `_optimizer_files`' output, with tuples where JSON made lists."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        kind, index, name = key.split(".", 2)
        if kind == "state":
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["state_scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    if len(meta["param_groups"]) != len(optimizer.param_groups):
        raise InvalidInputError(
            f"checkpoint optimizer has {len(meta['param_groups'])} parameter groups, this recipe's "
            f"has {len(optimizer.param_groups)}"
        )
    groups = []
    for saved, current in zip(meta["param_groups"], optimizer.param_groups, strict=True):
        group = {}
        for key, value in saved.items():
            if isinstance(value, dict) and "tensor" in value:
                value = tensors[value["tensor"]]
            elif isinstance(value, list) and isinstance(current.get(key), tuple):
                value = tuple(value)  # betas: JSON has no tuples
            group[key] = value
        groups.append(group)
    return {"state": state, "param_groups": groups}


def _first_nonfinite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating tensor holding NaN or inf, or None."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def _optimizer_kind(group: str) -> str:
    return "optimizer state" if group == SINGLE_GROUP else f"optimizer '{group}' state"


def nonfinite_tensor(
    model: torch.nn.Module, ema: torch.nn.Module, optimizers: Mapping[str, torch.optim.Optimizer]
) -> str | None:
    """Which weight or optimizer state holds NaN or inf ("EMA weight 'net.0.bias'"), or None."""
    parts = {"weight": model.state_dict(), "EMA weight": ema.state_dict(),
             **{_optimizer_kind(g): _optimizer_files(opt)[0] for g, opt in optimizers.items()}}
    for kind, tensors in parts.items():
        if (name := _first_nonfinite(tensors)) is not None:
            return f"{kind} '{name}'"
    return None


# ------------------------------------------------------------------------------------- save


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _body_checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _write_files(
    tmp: Path,
    state: CheckpointState,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizers: Mapping[str, torch.optim.Optimizer],
) -> dict[str, str]:
    """Write every file but state.json into `tmp`; return their sha256 digests."""
    meta = {"format": FORMAT}
    save_file(_plain_tensors(model.state_dict()), tmp / "model.safetensors", metadata=meta)
    save_file(_plain_tensors(ema.state_dict()), tmp / "ema.safetensors", metadata=meta)
    for group, optimizer in optimizers.items():
        opt_tensors, opt_meta = _optimizer_files(optimizer)
        tensors_file, json_file = optimizer_files(group)
        save_file(opt_tensors, tmp / tensors_file, metadata=meta)
        (tmp / json_file).write_text(json.dumps(opt_meta, indent=1))
    save_file(_plain_tensors(state.rng), tmp / "rng.safetensors", metadata=meta)
    digests = {}
    for path in sorted(tmp.iterdir()):
        fsync_file(path)
        digests[path.name] = _sha256(path)
    return digests


def save_checkpoint(
    run_dir: str | Path,
    state: CheckpointState,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizers: Mapping[str, torch.optim.Optimizer],
) -> Path:
    """Atomically replace `run_dir/checkpoint/` with the given state and every parameter group's
    optimizer (group name -> optimizer); return its path."""
    for group in optimizers:
        if not GROUP_NAME.fullmatch(group):
            raise ValueError(f"parameter group name {group!r} is not {GROUP_NAME.pattern}")
    run_dir = Path(run_dir)
    tmp = run_dir / CHECKPOINT_TMP
    if tmp.exists():  # debris of a save that crashed; the real checkpoint is untouched
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        files = _write_files(tmp, state, model, ema, optimizers)
        body = {
            "format": FORMAT,
            "step": state.step,
            "data_position": state.data_position,
            "wall_time": state.wall_time,
            "world_size": state.world_size,
            "recipe": state.recipe,
            "files": files,
        }
        body["checksum"] = _body_checksum(body)
        atomic_write_text(tmp / "state.json", json.dumps(body, indent=1))
        fsync_dir(tmp)
        replace_dir(tmp, run_dir / CHECKPOINT)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir / CHECKPOINT


# ------------------------------------------------------------------------------------- load


def _read_state(ckpt: Path) -> dict[str, Any]:
    path = ckpt / "state.json"
    if not path.is_file():
        raise CorruptFileError(f"checkpoint file {path} is missing; the checkpoint is incomplete")
    try:
        body = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise CorruptFileError(f"checkpoint file {path} is corrupt (not valid JSON)") from None
    if not isinstance(body, dict) or "checksum" not in body:
        raise CorruptFileError(f"checkpoint file {path} is corrupt (not a checkpoint's state)")
    checksum = body.pop("checksum")
    if checksum != _body_checksum(body):
        raise CorruptFileError(f"checkpoint file {path} is corrupt (checksum mismatch)")
    if body.get("format") != FORMAT:
        raise CorruptFileError(f"checkpoint {ckpt} has format {body.get('format')!r}, not {FORMAT}")
    _check_body(body, path)
    return body




def _check_body(body: dict[str, Any], path: Path) -> None:
    """Every field of state.json has its type and a possible value; else CorruptFileError.

    The checksum only proves the file is whole: anyone can write a consistent one (step -5).
    """
    def bad(why: str) -> CorruptFileError:
        return CorruptFileError(f"checkpoint file {path} is not valid: {why}")

    def count(name: str, low: int) -> int:
        value = body.get(name)
        if type(value) is not int or value < low:
            raise bad(f"'{name}' must be an integer >= {low}, got {value!r}")
        return value

    step = count("step", 0)
    count("data_position", 0)
    count("world_size", 1)
    wall = body.get("wall_time")
    if type(wall) not in (int, float) or not math.isfinite(wall) or wall < 0:
        raise bad(f"'wall_time' must be a number of seconds >= 0, got {wall!r}")
    recipe = body.get("recipe")
    if not isinstance(recipe, dict) or nesting_depth(recipe, MAX_RECIPE_DEPTH) > MAX_RECIPE_DEPTH:
        raise bad(f"'recipe' must be a recipe's table, got {str(recipe)[:80]}")
    planned = _recipe_steps(recipe)
    if planned is None:
        raise bad(f"its recipe's train.steps is not an integer: {recipe.get('train')!r}")
    if step > planned:  # a run never goes past its own recipe's end
        raise bad(f"step {step} is past the {planned} steps its own recipe trains")
    files = body.get("files")
    if (not isinstance(files, dict) or _groups_of(files) is None
            or not all(isinstance(v, str) for v in files.values())):
        raise bad(f"'files' must map {', '.join(FILES)} and each optimizer's .json and "
                  ".safetensors to their sha256")


# A recipe nests a few tables deep ([data] mix = {...}); a deeper one is no recipe, and would
# exhaust the recursion of code that walks it (the resume's list of recipe changes).
MAX_RECIPE_DEPTH = 16


def _recipe_steps(recipe: dict[str, Any]) -> int | None:
    """The train.steps a saved recipe asks for (TrainConfig's default if unset), or None."""
    section = recipe.get("train", {})
    steps = section.get("steps", TrainConfig.steps) if isinstance(section, dict) else None
    return steps if type(steps) is int else None


def _verify_files(ckpt: Path, files: dict[str, str]) -> None:
    """Check every file against state.json before touching the model, so failure changes nothing."""
    for name, expected in files.items():
        path = ckpt / name
        if not path.is_file():
            raise CorruptFileError(f"checkpoint file {path} is missing")
        if _sha256(path) != expected:
            raise CorruptFileError(f"checkpoint file {path} is corrupt (sha256 mismatch)")


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:
        raise CorruptFileError(f"checkpoint file {path} is unreadable: {e}") from None


def _load_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    try:
        module.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise InvalidInputError(
            f"checkpoint {path} does not fit the model this recipe builds ({first})"
        ) from None


def load_checkpoint(
    run_dir: str | Path,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizers: Mapping[str, torch.optim.Optimizer],
) -> CheckpointState:
    """Restore model, EMA and every group's optimizer from the run's checkpoint; RNG is left to
    `restore_rng`. The checkpoint must hold the same parameter groups as `optimizers`.

    Every file is read and checked (hashes, fields, finite values, RNG shapes) before the model is
    touched, so a corrupt or forged checkpoint is a one-line CorruptFileError and changes nothing.
    """
    ckpt = checkpoint_dir(run_dir)
    if ckpt is None:
        raise InvalidInputError(f"{run_dir} has no checkpoint to resume from")
    body = _read_state(ckpt)
    saved_groups = _groups_of(body["files"])
    if saved_groups != sorted(optimizers):
        raise InvalidInputError(
            f"{ckpt} holds the optimizers of parameter groups {', '.join(saved_groups or [])}; "
            f"this recipe's model has {', '.join(sorted(optimizers))}: resume with the family "
            "and recipe that wrote it, or start a new run")
    _verify_files(ckpt, body["files"])
    tensors = {name: _load_tensors(ckpt / name)
               for name in body["files"] if name.endswith(".safetensors")}
    for name, loaded in tensors.items():
        if name != "rng.safetensors" and (bad := _first_nonfinite(loaded)) is not None:
            raise CorruptFileError(
                f"checkpoint file {ckpt / name} holds NaN or inf (in '{bad}'): the run diverged "
                "before it was saved or the file was altered; start afresh"
            )
    rng = tensors["rng.safetensors"]
    _check_rng(rng, body["world_size"], ckpt / "rng.safetensors")
    opt_states = {}
    for group, optimizer in optimizers.items():
        tensors_file, json_file = optimizer_files(group)
        opt_states[group] = _read_optimizer(ckpt / json_file, optimizer, tensors[tensors_file])
    _load_into(model, tensors["model.safetensors"], ckpt / "model.safetensors")
    _load_into(ema, tensors["ema.safetensors"], ckpt / "ema.safetensors")
    for group, optimizer in optimizers.items():
        try:
            optimizer.load_state_dict(opt_states[group])
        except (ValueError, KeyError) as e:
            raise InvalidInputError(
                f"optimizer state of group '{group}' in {ckpt} does not fit this recipe's model "
                f"({e})") from None
        _check_optimizer_shapes(optimizer, ckpt / optimizer_files(group)[0])
    return CheckpointState(
        step=body["step"],
        data_position=body["data_position"],
        wall_time=float(body["wall_time"]),
        world_size=body["world_size"],
        recipe=body["recipe"],
        rng=rng,
    )


def _check_rng(rng: dict[str, torch.Tensor], world_size: int, path: Path) -> None:
    """One row per rank of each state `capture_rng` takes, with this machine's shapes."""
    expected = capture_rng(torch.Generator())
    for name, like in expected.items():
        got = rng.get(name)
        if name == "cuda" and got is None:
            continue  # saved without CUDA: restore_rng leaves CUDA's state alone
        if got is None or got.dtype != like.dtype or got.shape != (world_size, *like.shape):
            shape = None if got is None else tuple(got.shape)
            raise CorruptFileError(
                f"checkpoint file {path} is not valid: RNG state '{name}' has shape {shape}, "
                f"expected {(world_size, *like.shape)}"
            )


def _read_optimizer(
    path: Path, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """optimizer.json and its tensors as a state_dict for `optimizer`, checked for shape."""
    try:
        meta = json.loads(path.read_text())
        if not isinstance(meta, dict):
            raise TypeError("not a table")
        state = _optimizer_state_dict(optimizer, tensors, meta)
        _check_groups(state["param_groups"], optimizer.param_groups)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, UnicodeDecodeError,
            RecursionError) as e:
        raise CorruptFileError(
            f"checkpoint optimizer state {path.with_suffix('.*')} is not valid ({e})") from None
    return state


def _check_groups(saved: list[dict[str, Any]], current: list[dict[str, Any]]) -> None:
    """Each saved hyperparameter has the type of the one it replaces (betas two numbers)."""
    def kind(v: Any) -> str:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return type(v).__name__
        if isinstance(v, int | float):
            if not math.isfinite(v):
                raise ValueError(f"a parameter group holds {v}")
            return "number"
        if torch.is_tensor(v):
            return "tensor"
        if isinstance(v, list | tuple):
            return f"list of {len(v)}: " + ",".join(kind(x) for x in v)
        return type(v).__name__

    for g, (old, new) in enumerate(zip(saved, current, strict=True)):
        if not isinstance(old, dict):
            raise TypeError(f"parameter group {g} is not a table")
        for key, value in new.items():
            if key == "params" or key not in old:
                continue  # ids are checked by torch; a key newer torch added keeps its default
            if kind(old[key]) != kind(value):
                raise TypeError(f"parameter group {g} has {key}={old[key]!r}")


def _check_optimizer_shapes(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Per-weight state (Adam's moments) has its weight's shape; else the first step would fail."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value) and value.dim() and value.shape != param.shape:
                    raise CorruptFileError(
                        f"checkpoint file {path} is not valid: optimizer state '{name}' has "
                        f"shape {tuple(value.shape)} for a weight of shape {tuple(param.shape)}"
                    )
