"""Family name -> its Pipeline class and its training task. Imports lazily: loading one family
never pays for the others."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from gambar.errors import InvalidInputError

# family -> (pipeline "module:Class", training-task factory "module:function")
FAMILIES: dict[str, tuple[str, str]] = {
    "diffusion": (
        "gambar.generators.diffusion.pipeline:DiffusionPipeline",
        "gambar.generators.diffusion.training:DiffusionTask",
    ),
    # Not a generator: gambar.load() of a contrastive model returns a ContrastiveModel (no
    # generate()); it is trained through the same loop and used by the evaluator.
    "contrastive": (
        "gambar.contrastive.model:ContrastiveModel",
        "gambar.contrastive.task:ContrastiveTask",
    ),
}


def _resolve(ref: str) -> Any:
    module, attr = ref.split(":")
    return getattr(import_module(module), attr)


def _entry(family: str) -> tuple[str, str]:
    if family not in FAMILIES:
        raise InvalidInputError(
            f"unknown model family {family!r}; known: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[family]


def pipeline_class(family: str) -> Any:
    """The Pipeline class of a family."""
    return _resolve(_entry(family)[0])


def task_factory(family: str) -> Callable[[dict[str, Any]], Any]:
    """The callable that builds a family's TrainingTask from a recipe dict."""
    return _resolve(_entry(family)[1])
