"""A saved model is a plain directory: config.json + model.safetensors (+ tokenizer.json), and
SHA256SUMS, the sha256 of each of those files.

Every family writes and reads it through these functions, so the integrity checks (a damaged,
truncated or mismatched file becomes a one-line CorruptFileError naming it) and the model hash
are defined once.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from gambar.errors import CorruptFileError, InvalidInputError
from gambar.fsutil import atomic_write_bytes, atomic_write_text

FORMAT = "gambar/1"  # config.json format of saved models
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
# `sha256sum -c SHA256SUMS` checks a model by hand. The name has neither suffix model_files
# hashes, so adding the manifest left every model hash (recorded in images' provenance) unchanged.
MANIFEST = "SHA256SUMS"
_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")  # sha256sum's "<hex>  <name>" (or " *<name>")
_BLOCK = 1 << 20


def model_files(path: Path) -> list[Path]:
    """The files a model's hash covers: its config, weights and tokenizer."""
    return [p for p in Path(path).iterdir() if p.suffix in (".json", ".safetensors")]


def _digests(path: Path, extra: Iterable[str] = ()) -> tuple[dict[str, str], str]:
    """(sha256 of each model file and of each `extra` name that exists, the model hash).

    One read of each file serves both, so checking the manifest costs no second pass."""
    covered = {f.name for f in model_files(path)}
    model = hashlib.sha256()
    files: dict[str, str] = {}
    for name in sorted(covered | {n for n in extra if (path / n).is_file()}):
        digest = hashlib.sha256()
        in_model = name in covered
        if in_model:
            model.update(name.encode())
        try:
            with open(path / name, "rb") as fh:
                while block := fh.read(_BLOCK):
                    digest.update(block)
                    if in_model:
                        model.update(block)
        except OSError as exc:
            raise CorruptFileError(f"{path / name} is unreadable ({exc.strerror})") from None
        files[name] = digest.hexdigest()
    return files, model.hexdigest()


def model_sha256(path: Path) -> str:
    """sha256 over a model directory's files (name and bytes), in name order."""
    return _digests(Path(path))[1]


def read_manifest(path: Path) -> dict[str, str] | None:
    """SHA256SUMS as {file name: sha256}, or None for a directory saved without one."""
    manifest = Path(path) / MANIFEST
    try:
        text = manifest.read_bytes().decode("ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{manifest} is unreadable ({exc})") from None
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _LINE.fullmatch(line)
        name = match[2] if match else ""
        # Plain names only: a manifest must not make us read files outside the model directory.
        if not match or "/" in name or name in (".", "..") or name in entries:
            raise CorruptFileError(
                f"{manifest} line {number} is not '<sha256>  <file name>'; "
                "re-download or re-save the model")
        entries[name] = match[1]
    return entries


def _manifest_text(files: dict[str, str]) -> str:
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(files.items()))


def verify_model_dir(path: Path) -> str:
    """Check every file against SHA256SUMS; return the model hash (one read of each file).

    A directory without SHA256SUMS (saved before gambar wrote one) still loads, unchecked: the
    weights loader and the config checks still refuse gross damage. A manifest that lists a
    missing file, leaves out a model file, or disagrees with one is a CorruptFileError."""
    path = Path(path)
    manifest = read_manifest(path)
    files, model_hash = _digests(path, manifest or ())
    if manifest is None:
        return model_hash
    for name, expected in manifest.items():
        if name not in files:
            raise CorruptFileError(
                f"{path / name} is missing (listed in {MANIFEST}); "
                "re-download or re-save the model")
        if files[name] != expected:
            raise CorruptFileError(
                f"{path / name} does not match its sha256 in {MANIFEST}: it was damaged or changed "
                "after saving; re-download or re-save the model")
    unlisted = sorted(set(files) - set(manifest))
    if unlisted:
        raise CorruptFileError(
            f"{path / unlisted[0]} is not listed in {MANIFEST} although the model hash covers it; "
            "remove it or re-save the model")
    return model_hash


def read_config(path: Path) -> dict[str, Any]:
    """A model directory's config.json, checked against SHA256SUMS, for format and family.

    Only config.json is hashed here (it is small); the family's load() checks every file."""
    file = Path(path) / CONFIG
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise CorruptFileError(f"{file} is unreadable ({exc.strerror})") from None
    expected = (read_manifest(path) or {}).get(CONFIG)
    if expected is not None and hashlib.sha256(raw).hexdigest() != expected:
        raise CorruptFileError(
            f"{file} does not match its sha256 in {MANIFEST}: it was damaged or changed after "
            "saving; re-download or re-save the model")
    try:
        cfg = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
        raise CorruptFileError(f"{file} is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT or "family" not in cfg:
        raise CorruptFileError(f"{file} is not a gambar model config ({FORMAT})")
    if not isinstance(cfg["family"], str):
        raise CorruptFileError(f"{file}: 'family' must be a string, not {cfg['family']!r}")
    return cfg


def config_error(path: Path, what: str, exc: Exception) -> CorruptFileError:
    """The one-line error for a config.json whose values a family's load() refuses (`exc`: the
    check's InvalidInputError, or the KeyError/TypeError of a missing or mistyped entry)."""
    reason = exc.args[0] if isinstance(exc, InvalidInputError) else f"{type(exc).__name__}: {exc}"
    return CorruptFileError(f"{Path(path) / CONFIG} is not a valid {what} config: {reason}; "
                            "re-save or re-download the model")


def save_model_dir(path: Path, module: nn.Module, config: dict[str, Any], *,
                   dtype: torch.dtype = torch.float32) -> str:
    """Write `module`'s weights (as `dtype`), `config` and SHA256SUMS atomically; return the
    model hash.

    Extra files (a tokenizer) are the caller's to write before calling this, so the hash and the
    manifest see them. The manifest is written last: a crash part way leaves files that disagree
    with the old manifest, which load() reports, never a silently mixed model."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype).contiguous() for k, v in module.state_dict().items()}
    # One metadata key only: safetensors writes its metadata map in hash order, so with two keys
    # the same weights could give different bytes, and a different model hash, on each save.
    blob = save(state, metadata={"format": FORMAT})
    atomic_write_bytes(path / WEIGHTS, blob, overwrite=True)
    atomic_write_text(path / CONFIG, json.dumps({"format": FORMAT, **config}, indent=2),
                      overwrite=True)
    files, model_hash = _digests(path)
    atomic_write_text(path / MANIFEST, _manifest_text(files), overwrite=True)
    return model_hash


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
