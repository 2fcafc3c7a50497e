"""A saved model is a plain directory: config.json, one safetensors file per component
(+ tokenizer.json), and SHA256SUMS, the sha256 of each of those files.

A component is one named network: most models have one, "model" (model.safetensors); a cascade
or unCLIP has several ("prior" -> prior.safetensors, ...). config.json lists them under
"components"; a directory saved before components existed (no such entry) has just "model".

Every family writes and reads it through these functions, so the integrity checks (a damaged,
truncated or mismatched file becomes a one-line CorruptFileError naming it) and the model hash
(over every file, so every component) are defined once. Importing this module does not import
torch: the CLI resolves model names through it before any model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gambar.errors import CorruptFileError, InvalidInputError, ModelNotFoundError
from gambar.fsutil import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "gambar/1"  # config.json format of saved models
CONFIG = "config.json"
MAIN = "model"  # the component of a one-network model, and of every directory saved before
WEIGHTS = "model.safetensors"  # its file: the name (and so the hash) older models keep
COMPONENTS = "components"  # config.json's {component name: file name}
_COMPONENT = re.compile(r"[a-z][a-z0-9_]{0,31}")
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


def component_file(name: str) -> str:
    """The file a component is stored in: model.safetensors for "model", else <name>.safetensors.

    Only a name of [a-z][a-z0-9_] (at most 32 characters) is a component, so a config.json can
    never point a load at a file outside the model directory."""
    if not isinstance(name, str) or not _COMPONENT.fullmatch(name):
        raise ValueError(f"a component name is [a-z][a-z0-9_]{{0,31}}, not {name!r}")
    return WEIGHTS if name == MAIN else f"{name}.safetensors"


def is_component_file(file_name: str) -> bool:
    """Whether `file_name` is what some component is stored in (a run's model/ may hold it)."""
    stem, dot, suffix = file_name.partition(".")
    return suffix == "safetensors" and _COMPONENT.fullmatch(stem) is not None


def listed_components(path: Path, config: Mapping[str, Any]) -> dict[str, str]:
    """config.json's components, {name: file name}, checked; {"model": "model.safetensors"} for
    a directory saved before components existed."""
    listed = config.get(COMPONENTS, {MAIN: WEIGHTS})
    where = Path(path) / CONFIG
    if not isinstance(listed, dict) or not listed:
        raise CorruptFileError(f"{where}: '{COMPONENTS}' must map component names to files, "
                               f"not {listed!r:.60}; re-save or re-download the model")
    for name, file in listed.items():
        if not (isinstance(name, str) and _COMPONENT.fullmatch(name)) or file != component_file(
                name):
            raise CorruptFileError(
                f"{where}: component {name!r:.40} -> {file!r:.60} is not a component name and its "
                "file (<name>.safetensors, model.safetensors for 'model'); re-save or "
                "re-download the model")
    return dict(listed)


def _stale_components(path: Path, keep: set[str]) -> list[Path]:
    """Component files of an earlier save into `path` that this save does not write (they would
    make the directory unloadable). A .safetensors file no earlier save listed may be the
    user's: refused, never deleted."""
    try:
        old = json.loads((path / CONFIG).read_bytes())
        listed = set(listed_components(path, old).values()) if isinstance(old, dict) else {WEIGHTS}
    except (OSError, ValueError, RecursionError, CorruptFileError):
        listed = {WEIGHTS}
    stale = [p for p in sorted(path.glob("*.safetensors")) if p.name not in keep]
    for file in stale:
        if file.name not in listed or not file.is_file() or file.is_symlink():
            raise InvalidInputError(
                f"{file} is in the model directory but is not one of the model's components; "
                "move it away or save the model to another directory")
    return stale


def save_model_dir(path: Path, components: Mapping[str, nn.Module] | nn.Module,
                   config: Mapping[str, Any], *, dtype: torch.dtype | None = None) -> str:
    """Write each component's weights (as `dtype`, default float32), `config` (+ "components")
    and SHA256SUMS atomically; return the model hash.

    `components` is {name: module}; a bare module is {"model": module}. Extra files (a
    tokenizer) are the caller's to write before calling this, so the hash and the manifest see
    them. The manifest is written last: a crash part way leaves files that disagree with the
    old manifest, which load() reports, never a silently mixed model."""
    import torch
    from safetensors.torch import save

    if isinstance(components, torch.nn.Module):
        components = {MAIN: components}
    if not components:
        raise ValueError("a model directory needs at least one component")
    files = {name: component_file(name) for name in components}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    stale = _stale_components(path, set(files.values()))
    for name, module in components.items():
        state = {k: v.detach().to(dtype or torch.float32).contiguous()
                 for k, v in module.state_dict().items()}
        # One metadata key only: safetensors writes its metadata map in hash order, so with two
        # keys the same weights could give different bytes, and a different model hash, on
        # each save.
        atomic_write_bytes(path / files[name], save(state, metadata={"format": FORMAT}),
                           overwrite=True)
    for file in stale:
        file.unlink()
    atomic_write_text(path / CONFIG, json.dumps(
        {"format": FORMAT, **config, COMPONENTS: files}, indent=2), overwrite=True)
    digests, model_hash = _digests(path)
    atomic_write_text(path / MANIFEST, _manifest_text(digests), overwrite=True)
    return model_hash


def open_model_dir(path: Path, family: str | None = None) -> tuple[dict[str, Any], str]:
    """(config.json, model hash) of a saved model, every file checked against SHA256SUMS; a
    one-line CorruptFileError when it holds another `family`'s model."""
    sha256 = verify_model_dir(path)
    config = read_config(path)
    if family is not None and config["family"] != family:
        raise CorruptFileError(f"{path} holds a {config['family']!r} model, not a {family} one")
    return config, sha256


def load_components(path: Path, modules: Mapping[str, nn.Module], *,
                    config: Mapping[str, Any] | None = None) -> None:
    """Load each component listed in config.json into `modules[name]` (as float32).

    The names asked for must be the ones listed, and every .safetensors file in the directory
    must be a listed component: anything else is a one-line CorruptFileError naming the file.
    `config`: the config.json already read (open_model_dir), to avoid reading it twice."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    listed = listed_components(path, read_config(path) if config is None else config)
    if set(modules) != set(listed):
        raise CorruptFileError(
            f"{path / CONFIG} lists the components {', '.join(sorted(listed))}; this model has "
            f"{', '.join(sorted(modules))}; re-save or re-download the model")
    unlisted = sorted(p.name for p in path.glob("*.safetensors") if p.name not in
                      listed.values())
    if unlisted:
        raise CorruptFileError(
            f"{path / unlisted[0]} is not a component listed in {CONFIG}; remove it or re-save "
            "the model")
    for name, file in sorted(listed.items()):
        weights = path / file
        if not weights.is_file():
            raise CorruptFileError(f"{weights} is missing (component {name!r} listed in "
                                   f"{CONFIG}); re-download or re-save the model")
        try:
            state = load_file(str(weights))
        except (OSError, SafetensorError) as exc:
            raise CorruptFileError(f"{weights} is unreadable or corrupt ({exc})") from None
        try:
            modules[name].load_state_dict({k: v.float() for k, v in state.items()})
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise CorruptFileError(f"{weights} does not match its config: {first}") from None


def load_weights(path: Path, module: nn.Module) -> None:
    """Load the one component "model" into `module`. Kept while callers move to
    load_components."""
    load_components(path, {MAIN: module})


# ---------------------------------------------------------------------------------------------
# Finding a model by name


def builtin_models() -> dict[str, Path]:
    """Models shipped inside the package, by name."""
    root = Path(str(resources.files("gambar") / "weights"))
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / CONFIG).is_file()}


def resolve_model(name_or_path: str | Path) -> Path:
    """A model name ("default") or a directory -> the directory holding config.json."""
    if not isinstance(name_or_path, str | PathLike):
        raise InvalidInputError(f"a model is a name or a directory, not {name_or_path!r}")
    builtin = builtin_models()
    if isinstance(name_or_path, str) and name_or_path in builtin:
        return builtin[name_or_path]
    path = Path(name_or_path)
    try:
        if (path / CONFIG).is_file():
            return path
        if path.is_dir() and (path / "model" / CONFIG).is_file():  # a training run's dir
            return path / "model"
    except OSError:  # a name too long, a loop of links: not a model either
        pass
    names = ", ".join(builtin) or "none shipped"
    raise ModelNotFoundError(
        f"no model named or at {str(name_or_path)!r} (built-in models: {names}; "
        "a path must be a directory with config.json)"
    )
