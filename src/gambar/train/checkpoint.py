"""Atomic, pickle-free training checkpoints that resume a run bit for bit.

`run_dir/checkpoint/` holds safetensors for every tensor (model, EMA, optimizer state, RNG states)
and JSON for the rest. `state.json` is written last and records the sha256 of every other file, so
a truncated or flipped file is caught on load. The directory is built under a temporary name and
swapped in only when complete (`fsutil.replace_dir`): a crash leaves the previous checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gambar.errors import CorruptFileError, InvalidInputError
from gambar.fsutil import atomic_write_text, current_dir, fsync_dir, fsync_file, replace_dir

FORMAT = "gambar-checkpoint/1"
CHECKPOINT = "checkpoint"
_TMP = ".checkpoint.tmp"
_HASH_CHUNK = 1 << 20


@dataclass
class CheckpointState:
    """Everything besides module and optimizer tensors that a resumed run needs."""

    step: int  # optimizer steps completed
    data_position: int  # batches each rank has consumed (TrainingTask.batches' `start`)
    wall_time: float  # seconds of training so far, over all resumed segments
    world_size: int
    recipe: dict[str, Any]
    rng: dict[str, torch.Tensor] = field(default_factory=dict)  # each (world_size, ...): per rank


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
    """Put back the states `capture_rng` took; `rng` holds one row per rank, as checkpointed."""
    row = {name: t[rank] for name, t in rng.items()}
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
    optimizer: torch.optim.Optimizer,
) -> dict[str, str]:
    """Write every file but state.json into `tmp`; return their sha256 digests."""
    meta = {"format": FORMAT}
    opt_tensors, opt_meta = _optimizer_files(optimizer)
    save_file(_plain_tensors(model.state_dict()), tmp / "model.safetensors", metadata=meta)
    save_file(_plain_tensors(ema.state_dict()), tmp / "ema.safetensors", metadata=meta)
    save_file(opt_tensors, tmp / "optimizer.safetensors", metadata=meta)
    save_file(_plain_tensors(state.rng), tmp / "rng.safetensors", metadata=meta)
    (tmp / "optimizer.json").write_text(json.dumps(opt_meta, indent=1))
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
    optimizer: torch.optim.Optimizer,
) -> Path:
    """Atomically replace `run_dir/checkpoint/` with the given state; return its path."""
    run_dir = Path(run_dir)
    tmp = run_dir / _TMP
    if tmp.exists():  # debris of a save that crashed; the real checkpoint is untouched
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        files = _write_files(tmp, state, model, ema, optimizer)
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
        checksum = body.pop("checksum")
    except (ValueError, KeyError, AttributeError, UnicodeDecodeError):
        raise CorruptFileError(f"checkpoint file {path} is corrupt (not valid JSON)") from None
    if checksum != _body_checksum(body):
        raise CorruptFileError(f"checkpoint file {path} is corrupt (checksum mismatch)")
    if body.get("format") != FORMAT:
        raise CorruptFileError(f"checkpoint {ckpt} has format {body.get('format')!r}, not {FORMAT}")
    return body


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


def _load_into(module: torch.nn.Module, path: Path) -> None:
    try:
        module.load_state_dict(_load_tensors(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise InvalidInputError(
            f"checkpoint {path} does not fit the model this recipe builds ({first})"
        ) from None


def load_checkpoint(
    run_dir: str | Path,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> CheckpointState:
    """Restore model, EMA and optimizer from the run's checkpoint; RNG is left to `restore_rng`."""
    ckpt = checkpoint_dir(run_dir)
    if ckpt is None:
        raise InvalidInputError(f"{run_dir} has no checkpoint to resume from")
    body = _read_state(ckpt)
    _verify_files(ckpt, body["files"])
    _load_into(model, ckpt / "model.safetensors")
    _load_into(ema, ckpt / "ema.safetensors")
    opt_meta = json.loads((ckpt / "optimizer.json").read_text())
    opt_tensors = _load_tensors(ckpt / "optimizer.safetensors")
    try:
        optimizer.load_state_dict(_optimizer_state_dict(optimizer, opt_tensors, opt_meta))
    except (ValueError, KeyError) as e:
        raise InvalidInputError(
            f"optimizer state in {ckpt} does not fit this recipe's model ({e})"
        ) from None
    return CheckpointState(
        step=body["step"],
        data_position=body["data_position"],
        wall_time=body["wall_time"],
        world_size=body["world_size"],
        recipe=body["recipe"],
        rng=_load_tensors(ckpt / "rng.safetensors"),
    )
