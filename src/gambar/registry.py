"""Family name -> the class that loads it and its training task. Imports lazily: loading one
family never pays for the others.

Two kinds of family: generators draw images (their class is a Pipeline); evaluators score them
(the contrastive model behind CLIP score and FID features). Both train through the same loop and
save the same kind of model directory, but only a generator may be used where an image is drawn.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from gambar.errors import InvalidInputError

# family -> (model class "module:Class", training-task factory "module:function")
GENERATORS: dict[str, tuple[str, str]] = {
    "diffusion": (
        "gambar.generators.diffusion.pipeline:DiffusionPipeline",
        "gambar.generators.diffusion.training:DiffusionTask",
    ),
}
EVALUATORS: dict[str, tuple[str, str]] = {
    # Loaded by gambar.contrastive.load_contrastive (gambar evaluate --clip), never by load().
    "contrastive": (
        "gambar.contrastive.model:ContrastiveModel",
        "gambar.contrastive.task:ContrastiveTask",
    ),
}


def _resolve(ref: str) -> Any:
    module, attr = ref.split(":")
    return getattr(import_module(module), attr)


def _entry(family: str) -> tuple[str, str]:
    entry = GENERATORS.get(family) or EVALUATORS.get(family)
    if entry is None:
        known = ", ".join(sorted(GENERATORS.keys() | EVALUATORS.keys()))
        raise InvalidInputError(f"unknown model family {family!r}; known: {known}")
    return entry


def is_generator(family: str) -> bool:
    """Whether models of `family` draw images."""
    return family in GENERATORS


def model_class(family: str) -> Any:
    """The class whose `load(path)` reads a saved model of `family` (generator or evaluator)."""
    return _resolve(_entry(family)[0])


def pipeline_class(family: str, *, model: str = "") -> Any:
    """The Pipeline class of a generator family; a one-line error for an evaluator.

    `model` names the model the user asked for, for that message."""
    _entry(family)  # an unknown family: its own message
    if not is_generator(family):
        model = model or family
        raise InvalidInputError(
            f"{model!r} is a {family} model, an evaluator, not an image generator: it scores "
            f"images (gambar evaluate MODEL --clip {model}) but cannot draw them; "
            f"use a {' or '.join(sorted(GENERATORS))} model such as default")
    return _resolve(GENERATORS[family][0])


def task_factory(family: str) -> Callable[[dict[str, Any]], Any]:
    """The callable that builds a family's TrainingTask (generator or evaluator) from a recipe."""
    return _resolve(_entry(family)[1])
