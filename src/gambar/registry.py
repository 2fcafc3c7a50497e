"""Family name -> the class that loads it and its training task. Imports lazily: loading one
family never pays for the others.

Three kinds of family: generators draw images from prompts (their class is a Pipeline);
evaluators score them (the contrastive model behind CLIP score and FID features); parts serve
inside another model (a cascade's super-resolution stages, attached to a base model with
`scripts/build_cascade.py`; a latent model's autoencoder). All train through the same loop and
save the same kind of model directory, but only a generator may be used where an image is drawn
from a prompt.
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
    "grounded": (
        "gambar.generators.grounded.pipeline:GroundedPipeline",
        "gambar.generators.grounded.training:GroundedTask",
    ),
    "latent": (
        "gambar.generators.latent.pipeline:LatentPipeline",
        "gambar.generators.latent.training:LatentTask",
    ),
    "gan": (
        "gambar.generators.gan.pipeline:GanPipeline",
        "gambar.generators.gan.training:GanTask",
    ),
}
# generator family -> its Options class, in a torch-free module: the CLI builds its flags from
# these without importing any model code.
OPTIONS: dict[str, str] = {
    "diffusion": "gambar.generators.diffusion.options:DiffusionOptions",
    "grounded": "gambar.generators.grounded.options:GroundedOptions",
    "latent": "gambar.generators.latent.options:LatentOptions",
    "gan": "gambar.generators.gan.options:GanOptions",
}
EVALUATORS: dict[str, tuple[str, str]] = {
    # Loaded by gambar.contrastive.load_contrastive (gambar evaluate --clip), never by load().
    "contrastive": (
        "gambar.contrastive.model:ContrastiveModel",
        "gambar.contrastive.task:ContrastiveTask",
    ),
}

PARTS: dict[str, tuple[str, str]] = {
    # Loaded by a cascade (gambar.generators.diffusion.cascade), never by load().
    "superres": (
        "gambar.generators.superres.pipeline:SuperResPipeline",
        "gambar.generators.superres.training:SuperResTask",
    ),
    # Loaded by a latent recipe and carried inside the latent model, never by load().
    "autoencoder": (
        "gambar.generators.latent.autoencoder:Autoencoder",
        "gambar.generators.latent.autoencoder_task:AutoencoderTask",
    ),
}
# part family -> what to do with one instead of drawing from it
PART_USES = {
    "superres": "a cascade stage: it raises another model's images and cannot draw from a "
                "prompt; attach it to a base model with scripts/build_cascade.py and generate "
                "with that at the larger --size",
    "autoencoder": "a latent model's autoencoder: it cannot draw from a prompt; train a latent "
                   "model on it ([latent] autoencoder = \"<its directory>\" in the recipe)",
}


def _resolve(ref: str) -> Any:
    module, attr = ref.split(":")
    return getattr(import_module(module), attr)


def _entry(family: str) -> tuple[str, str]:
    entry = GENERATORS.get(family) or EVALUATORS.get(family) or PARTS.get(family)
    if entry is None:
        known = ", ".join(sorted(GENERATORS.keys() | EVALUATORS.keys() | PARTS.keys()))
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
    if family in PARTS:
        raise InvalidInputError(f"{model or family!r} is a {family} model, {PART_USES[family]}")
    if not is_generator(family):
        model = model or family
        raise InvalidInputError(
            f"{model!r} is a {family} model, an evaluator, not an image generator: it scores "
            f"images (gambar evaluate MODEL --clip {model}) but cannot draw them; "
            f"use a {' or '.join(sorted(GENERATORS))} model such as default")
    return _resolve(GENERATORS[family][0])


def options_class(family: str) -> Any:
    """A generator family's Options class (torch-free import)."""
    if family not in OPTIONS:
        _entry(family)  # an unknown family: its own message
        raise InvalidInputError(f"{family!r} models draw nothing and have no generation options")
    return _resolve(OPTIONS[family])


def all_options() -> dict[str, Any]:
    """Every registered generator family's Options class, by family."""
    return {family: options_class(family) for family in GENERATORS}


def register_generator(family: str, pipeline: str, task: str, options: str) -> None:
    """Add a generator family ("module:Class" references, imported when first used). The
    built-in families are listed above; this is for families defined outside gambar (tests,
    plug-ins). Registering a name twice with other references is an error."""
    entry = (pipeline, task)
    if family in EVALUATORS or family in PARTS or GENERATORS.get(family, entry) != entry or (
            OPTIONS.get(family, options) != options):
        raise ValueError(f"family {family!r} is already registered differently")
    GENERATORS[family] = entry
    OPTIONS[family] = options


def task_factory(family: str) -> Callable[[dict[str, Any]], Any]:
    """The callable that builds a family's TrainingTask (generator or evaluator) from a recipe."""
    return _resolve(_entry(family)[1])
