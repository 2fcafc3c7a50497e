"""The one interface the CLI, the evaluator and the server talk to, and `load()`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from gambar.errors import InvalidInputError, ModelNotFoundError
from gambar.model_dir import read_config

# progress(done_steps, total_steps) — what the CLI's bar and the server's job status show.
Progress = Callable[[int, int], None]


@dataclass
class Generated:
    """One generated image and everything needed to make it again."""

    image: Image.Image
    provenance: dict[str, Any]


class Pipeline(Protocol):
    family: str
    name: str
    sha256: str
    defaults: dict[str, Any]  # default sampler options (steps, guidance, sampler, size)

    def generate(self, prompts: Sequence[str], *, seeds: Sequence[int],
                 progress: bool | Progress = True, **options: Any) -> list[Generated]: ...

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: Path) -> Pipeline: ...


def builtin_models() -> dict[str, Path]:
    """Models shipped inside the package, by name."""
    root = Path(str(resources.files("gambar") / "weights"))
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "config.json").is_file()}


def resolve_model(name_or_path: str | Path) -> Path:
    """A model name ("default") or a directory -> the directory holding config.json."""
    if not isinstance(name_or_path, str | PathLike):
        raise InvalidInputError(f"a model is a name or a directory, not {name_or_path!r}")
    builtin = builtin_models()
    if isinstance(name_or_path, str) and name_or_path in builtin:
        return builtin[name_or_path]
    path = Path(name_or_path)
    try:
        if (path / "config.json").is_file():
            return path
        if path.is_dir() and (path / "model" / "config.json").is_file():  # a training run's dir
            return path / "model"
    except OSError:  # a name too long, a loop of links: not a model either
        pass
    names = ", ".join(builtin) or "none shipped"
    raise ModelNotFoundError(
        f"no model named or at {str(name_or_path)!r} (built-in models: {names}; "
        "a path must be a directory with config.json)"
    )


def load(name_or_path: str | Path = "default") -> Pipeline:
    """Load a saved image generator by name or path.

    An evaluator (a contrastive model) is refused with a one-line error: it cannot draw.
    Load one with gambar.contrastive.load_contrastive."""
    from gambar.registry import pipeline_class

    path = resolve_model(name_or_path)
    cls = pipeline_class(read_config(path)["family"], model=str(name_or_path))
    return cls.load(path)
