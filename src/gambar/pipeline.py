"""The one interface the CLI, the evaluator and the server talk to, and `load()`."""

from __future__ import annotations

import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from gambar.errors import InvalidInputError
from gambar.inputs import check_names as check_input_names
from gambar.inputs import digest, normalize
from gambar.model_dir import builtin_models, read_config, resolve_model  # noqa: F401 (re-export)
from gambar.options import Options
from gambar.seeding import check_seed
from gambar.text.checks import check_prompt

# progress(done_steps, total_steps) — what the CLI's bar and the server's job status show.
Progress = Callable[[int, int], None]


@dataclass
class Generated:
    """One generated image (or clip: several frames) and everything needed to make it again."""

    frames: list[Image.Image]
    provenance: dict[str, Any]

    def __post_init__(self) -> None:
        if not self.frames:
            raise ValueError("a Generated holds at least one frame")

    @property
    def image(self) -> Image.Image:
        """The image; for a clip, its first frame (a poster)."""
        return self.frames[0]


class Pipeline(Protocol):
    """What every generator family offers the CLI, the evaluator and the server."""

    family: str
    name: str
    sha256: str
    Options: type[Options]  # the family's options: every one, its default and its bounds
    inputs: frozenset[str]  # which named inputs (gambar.inputs.INPUTS) it accepts
    default_options: Options  # this model's defaults (the class's, then its config.json's)

    def generate(self, prompts: Sequence[str], *, seeds: Sequence[int],
                 options: Options | None = None, inputs: Mapping[str, Any] | None = None,
                 batch_size: int = 8, progress: bool | Progress = True,
                 **changes: Any) -> list[Generated]:
        """One Generated per (prompt, seed); item k depends only on its own seed. Options are
        `options` (default: default_options) with `changes` (option names) applied."""
        ...

    def check(self, options: Options, inputs: Mapping[str, Any]) -> None:
        """The family's own rules that need the model (a size its network can draw, a mask
        with its init image): a one-line InvalidInputError. `check_request` calls it, so the
        server refuses such a request before queueing it, and generate() before drawing."""
        ...

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: Path) -> Pipeline: ...


MAX_PROMPT_CHARS = 500
MAX_BATCH = 64


def check_request(pipe: Pipeline, prompts: Sequence[str], seeds: Sequence[int],
                  options: Options | None, changes: Mapping[str, Any],
                  inputs: Mapping[str, Any] | None, batch_size: int
                  ) -> tuple[Options, dict[str, Any]]:
    """The checks every family's generate() starts with: prompts, seeds, batch size, inputs
    (names the family takes, values as `gambar.inputs.normalize` gives them), options (one
    validation path for every caller, and none set whose input is missing), then the family's
    own `check`. Returns the resolved options and the normalised inputs."""
    if len(prompts) != len(seeds):
        raise InvalidInputError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    for p in prompts:
        check_prompt(p)
        if len(p) > MAX_PROMPT_CHARS:
            raise InvalidInputError(
                f"the prompt is {len(p)} characters; the limit is {MAX_PROMPT_CHARS}")
    for s in seeds:
        check_seed(s)
    if not 1 <= batch_size <= MAX_BATCH:
        raise InvalidInputError(f"batch size must be between 1 and {MAX_BATCH}, not {batch_size}")
    inputs = dict(inputs or {})
    check_input_names(inputs, pipe.inputs, pipe.family)
    inputs = {name: normalize(name, value) for name, value in inputs.items()}
    base = options if options is not None else pipe.default_options
    if not isinstance(base, pipe.Options):
        raise InvalidInputError(f"options for a {pipe.family} model must be "
                                f"{pipe.Options.__name__}, not {type(base).__name__}")
    opts = base.with_changes(changes, where=pipe.name)
    for spec in opts.specs():
        # "Set" = not the model's default: a resolved Options (the server's) cannot say more.
        if (spec.needs and spec.needs not in inputs
                and getattr(opts, spec.name) != getattr(pipe.default_options, spec.name)):
            raise InvalidInputError(f"{spec.name} needs the {spec.needs!r} input; give it or "
                                    f"leave {spec.name} out")
    pipe.check(opts, inputs)
    return opts, inputs


def common_provenance(pipe: Pipeline, prompt: str, seed: int, index: int, batch: int
                      ) -> dict[str, Any]:
    """The provenance fields every family records (DESIGN.md "Provenance"); a family adds its
    options, its inputs' digests (`input_provenance`) and what else it needs to replay."""
    import torch  # here, not at the top: gambar.pipeline is on the CLI's torch-free path

    import gambar

    return {"prompt": prompt, "seed": int(seed), "index_in_batch": index, "batch_size": batch,
            "family": pipe.family, "model_name": pipe.name, "model_sha256": pipe.sha256,
            "gambar_version": gambar.__version__, "torch_version": torch.__version__,
            "machine": platform.machine()}


def input_provenance(inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """{"inputs": {name: sha256}} for the inputs given; nothing when there are none, so an
    image drawn from the prompt alone has the same provenance as before inputs existed."""
    if not inputs:
        return {}
    return {"inputs": {name: digest(value) for name, value in sorted(inputs.items())}}


def load(name_or_path: str | Path = "default") -> Pipeline:
    """Load a saved image generator by name or path.

    An evaluator (a contrastive model) is refused with a one-line error: it cannot draw.
    Load one with gambar.contrastive.load_contrastive."""
    from gambar.registry import pipeline_class

    path = resolve_model(name_or_path)
    cls = pipeline_class(read_config(path)["family"], model=str(name_or_path))
    return cls.load(path)
