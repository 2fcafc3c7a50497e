"""Cascades (Imagen; Ho et al. 2021, "Cascaded Diffusion Models"): a base model draws at its
size, then super-resolution stages raise the image a factor at a time, each reading the prompt.

A cascade is one model directory: the base's components, plus one component per stage
("sr_128" -> sr_128.safetensors) and a config.json entry "cascade" listing each stage's config.
So one hash covers every stage, and an image's provenance records what every stage did. The
base model's class (diffusion or grounded) loads and saves its stages through this module;
`scripts/build_cascade.py` attaches trained stages to a base model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gambar.errors import CorruptFileError, InvalidInputError
from gambar.model_dir import CONFIG, config_error
from gambar.pipeline import Generated, Progress

if TYPE_CHECKING:
    from gambar.generators.diffusion.options import DiffusionOptions
    from gambar.generators.diffusion.pipeline import DiffusionPipeline
    from gambar.generators.superres.pipeline import SuperResPipeline

CASCADE = "cascade"  # config.json's list of stage configs
MAX_STAGES = 4


def component_name(size: int) -> str:
    """The component a stage's weights are stored under: named by the size it draws."""
    return f"sr_{size}"


def stage_sizes(base_size: int, stages: Sequence[SuperResPipeline]) -> list[int]:
    """The size each stage draws, in order."""
    sizes, size = [], base_size
    for stage in stages:
        size *= stage.superres.factor
        sizes.append(size)
    return sizes


def build_stages(config: Mapping[str, Any], path: Path, base_size: int
                 ) -> list[SuperResPipeline]:
    """The untrained stages a config.json lists (none for a model without a cascade); their
    weights are loaded with the base's components."""
    from gambar.generators.superres.pipeline import SuperResPipeline

    entries = config.get(CASCADE, [])
    if not isinstance(entries, list) or len(entries) > MAX_STAGES or not all(
            isinstance(e, dict) for e in entries):
        raise CorruptFileError(f"{Path(path) / CONFIG}: '{CASCADE}' must list at most "
                               f"{MAX_STAGES} stage configs; re-save or re-download the model")
    stages, size = [], base_size
    for entry in entries:
        model, text, dcfg, superres, extra = SuperResPipeline.from_config(entry, path)
        size *= superres.factor
        if dcfg.image_size != size:
            raise config_error(path, "cascade", InvalidInputError(
                f"the stage after {size // superres.factor} px draws {dcfg.image_size} px, not "
                f"{size} (its factor is {superres.factor})"))
        try:
            stages.append(SuperResPipeline(model, text, dcfg, superres,
                                           name=component_name(size), extra=extra))
        except InvalidInputError as exc:
            raise config_error(path, "cascade", exc) from None
    return stages


def load_with_stages(path: Path, config: Mapping[str, Any], base_size: int,
                     modules: Mapping[str, torch.nn.Module]) -> list[SuperResPipeline]:
    """Load the base's `modules` and the stages config.json lists, in one checked read of the
    directory's components; return the stages."""
    from gambar.model_dir import load_components

    stages = build_stages(config, path, base_size)
    load_components(path, {**modules, **stage_components(base_size, stages)}, config=config)
    return stages


def stage_components(base_size: int, stages: Sequence[SuperResPipeline]
                     ) -> dict[str, torch.nn.Module]:
    """{component name: stage network} for saving and loading."""
    sizes = stage_sizes(base_size, stages)
    return {component_name(s): stage.model for s, stage in zip(sizes, stages, strict=True)}


def stage_entries(stages: Sequence[SuperResPipeline]) -> list[dict[str, Any]]:
    """config.json's "cascade": each stage's own config (format and family left out)."""
    return [{k: v for k, v in stage.config_dict().items()
             if k not in ("family", "gambar_version")} for stage in stages]


def cascade_sizes(pipe: Any) -> list[int]:
    """The sizes a loaded model's cascade draws beyond its base size ([] without a cascade)."""
    stages = getattr(pipe, "stages", None)
    return stage_sizes(pipe.cfg.image_size, stages) if stages else []


def plan(base: DiffusionPipeline, size: int) -> list[SuperResPipeline] | None:
    """The stages that raise the base's images to `size`, or None when `size` is not one the
    cascade draws (then the base draws it itself)."""
    sizes = stage_sizes(base.cfg.image_size, base.stages)
    if size not in sizes:
        return None
    return list(base.stages[:sizes.index(size) + 1])


def check(base: DiffusionPipeline, options: DiffusionOptions, inputs: Mapping[str, Any]) -> None:
    """A cascade size with an init image or a mask: refused (the stages read no init image, so
    img2img and inpainting would hold only at the base's size)."""
    if plan(base, options.size) is not None and ("init" in inputs or "mask" in inputs):
        raise InvalidInputError(
            f"img2img and inpainting draw at the base size {base.cfg.image_size}, not through "
            f"the cascade's {options.size}: leave --size out or drop --init/--mask")


def draw(base: DiffusionPipeline, prompts: list[str], seeds: list[int],
         opts: DiffusionOptions, inputs: Mapping[str, Any], batch_size: int,
         progress: bool | Progress) -> list[Generated]:
    """The base draws at its size, then each stage raises the images (with its stored
    options); the provenance is the base's, at the final size, plus what each stage did."""
    stages = plan(base, opts.size)
    assert stages is not None
    out = base.draw(prompts, seeds, replace(opts, size=base.cfg.image_size), inputs,
                    batch_size, progress)
    records: list[list[dict[str, Any]]] = [[] for _ in prompts]
    size = base.cfg.image_size
    for stage in stages:
        size *= stage.superres.factor
        stage_opts = replace(stage.default_options, size=size)
        raised = stage.draw(prompts, seeds, stage_opts, {"image": [g.image for g in out]},
                            batch_size, progress)
        for k, gen in enumerate(raised):
            p = gen.provenance
            records[k].append({"component": component_name(size), "size": size,
                               "factor": stage.superres.factor, "sampler": p["sampler"],
                               "steps": p["steps"], "guidance": p["guidance"],
                               "aug_level": p["aug_level"]})
        out = [Generated(r.frames, g.provenance) for r, g in zip(raised, out, strict=True)]
    return [Generated(g.frames, {**g.provenance, "size": opts.size, "base_size":
                                 base.cfg.image_size, CASCADE: rec})
            for g, rec in zip(out, records, strict=True)]
