"""A saved model is a plain directory: config.json + model.safetensors (+ tokenizer.json).

Every family writes and reads it through these functions, so the integrity checks (corrupt or
mismatched weights become a one-line CorruptFileError) and the model hash are defined once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from gambar.errors import CorruptFileError
from gambar.fsutil import atomic_write_bytes, atomic_write_text

FORMAT = "gambar/1"  # config.json format of saved models
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def model_files(path: Path) -> list[Path]:
    """The files a model's hash covers: its config, weights and tokenizer."""
    return [p for p in Path(path).iterdir() if p.suffix in (".json", ".safetensors")]


def model_sha256(path: Path) -> str:
    """sha256 over a model directory's files (name and bytes), in name order."""
    digest = hashlib.sha256()
    for f in sorted(model_files(path), key=lambda p: p.name):
        digest.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_config(path: Path) -> dict[str, Any]:
    """A model directory's config.json, checked for format and family."""
    try:
        cfg = json.loads((Path(path) / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"{Path(path) / CONFIG} is unreadable ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT or "family" not in cfg:
        raise CorruptFileError(f"{Path(path) / CONFIG} is not a gambar model config ({FORMAT})")
    return cfg


def save_model_dir(path: Path, module: nn.Module, config: dict[str, Any], *,
                   dtype: torch.dtype = torch.float32) -> str:
    """Write `module`'s weights (as `dtype`) and `config` atomically; return the model hash.

    Extra files (a tokenizer) are the caller's to write before calling this, so the hash sees
    them."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype).contiguous() for k, v in module.state_dict().items()}
    # One metadata key only: safetensors writes its metadata map in hash order, so with two keys
    # the same weights could give different bytes, and a different model hash, on each save.
    blob = save(state, metadata={"format": FORMAT})
    atomic_write_bytes(path / WEIGHTS, blob, overwrite=True)
    atomic_write_text(path / CONFIG, json.dumps({"format": FORMAT, **config}, indent=2),
                      overwrite=True)
    return model_sha256(path)


def load_weights(path: Path, module: nn.Module) -> None:
    """Load model.safetensors into `module` (as float32), or say clearly why it cannot."""
    weights = Path(path) / WEIGHTS
    try:
        state = load_file(str(weights))
    except (OSError, SafetensorError) as exc:
        raise CorruptFileError(f"{weights} is unreadable or corrupt ({exc})") from None
    try:
        module.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CorruptFileError(f"{weights} does not match its config: {first}") from None
