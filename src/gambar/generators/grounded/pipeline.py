"""The grounded family as a Pipeline: prompt -> layout stage -> layout-conditioned diffusion.

A layout is a list of (phrase, box). The user may give one (`inputs={"layout": ...}`,
`--layout boxes.json`); otherwise the layout stage samples one per image from its own seed. Either
way the layout used is in the image's provenance, and the image stage reads it the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from gambar.config import dataclass_from_dict
from gambar.errors import InvalidInputError
from gambar.generators.diffusion import cascade
from gambar.generators.diffusion.config import DiffusionConfig
from gambar.generators.diffusion.pipeline import (
    DiffusionPipeline,
    _section,
    check_pixel_channels,
    read_sections,
)
from gambar.generators.grounded.grounding import (
    GroundedCond,
    GroundingConfig,
    LayoutBatch,
    PhraseCache,
)
from gambar.generators.grounded.model import GroundedModel
from gambar.generators.grounded.options import GroundedOptions
from gambar.generators.grounded.planner import PlannerConfig, plan_layout
from gambar.inputs import Layout
from gambar.model_dir import config_error, open_model_dir
from gambar.text.base import Encoded
from gambar.text.setup import TextSetup


class GroundedPipeline(DiffusionPipeline):
    """Text -> layout (given or sampled) -> grounded UNet + stateless sampler -> image."""

    family = "grounded"
    Options = GroundedOptions
    inputs = frozenset({"init", "mask", "layout"})

    def __init__(self, model: GroundedModel, text: TextSetup, cfg: DiffusionConfig,
                 *, name: str = "unsaved", sha256: str = "", extra: dict[str, Any] | None = None
                 ) -> None:
        if text.frozen is None:
            raise InvalidInputError("a grounded model needs the frozen MiniLM text encoder")
        self.grounded = model.eval()
        self.phrases = PhraseCache(text.frozen, model.image.grounding.cfg.phrase)
        super().__init__(model.image, text, cfg, name=name, sha256=sha256,  # type: ignore[arg-type]
                         extra=extra)

    # ---- saving and loading -------------------------------------------------------------
    def components(self) -> dict[str, torch.nn.Module]:
        return {"model": self.grounded.image, "planner": self.grounded.planner}

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(),
                "grounding": asdict(self.grounded.image.grounding.cfg),
                "planner": asdict(self.grounded.planner.cfg)}

    @classmethod
    def load(cls, path: Path) -> GroundedPipeline:
        """Read a model directory written by `save` (checked like a diffusion model's)."""
        path = Path(path)
        cfg, sha256 = open_model_dir(path, cls.family)
        try:
            unet_cfg, dcfg, extra, text = read_sections(cfg, path)
            check_pixel_channels(unet_cfg)
            grounding = dataclass_from_dict(GroundingConfig, _section(cfg, "grounding"),
                                            section="grounding")
            planner = dataclass_from_dict(PlannerConfig, _section(cfg, "planner"),
                                          section="planner")
        except (InvalidInputError, KeyError, TypeError, ValueError) as exc:
            raise config_error(path, "grounded model", exc) from None
        # the UNet's config is stored with its extra channels; the image stage adds them again
        model = GroundedModel(replace(unet_cfg, extra_channels=0), grounding, planner)
        stages = cascade.load_with_stages(path, cfg, dcfg.image_size,
                                          {"model": model.image, "planner": model.planner})
        try:
            pipe = cls(model, text, dcfg, name=extra.get("name", path.name), sha256=sha256,
                       extra=extra)
            pipe.stages = stages
            return pipe
        except InvalidInputError as exc:
            raise config_error(path, "grounded model", exc) from None

    # ---- the layout stage ---------------------------------------------------------------
    def plan(self, prompt: str, seed: int, temperature: float = 1.0) -> Layout:
        """The layout stage's layout for one prompt and seed (an empty prompt: no objects)."""
        return plan_layout(self.grounded.planner, self.text.frozen, prompt, seed, temperature)

    def layout_batch(self, layouts: Sequence[Layout]) -> LayoutBatch:
        phrases = self.phrases([b.phrase for lay in layouts for b in lay.objects])
        it = iter(phrases)
        return LayoutBatch.build(
            [[(next(it), (b.x0, b.y0, b.x1, b.y1)) for b in lay.objects] for lay in layouts],
            self.text.dim)

    def conditions(self, prompts: Sequence[str], seeds: Sequence[int], opts: GroundedOptions,
                   inputs: Mapping[str, Any], uncond_text: Encoded
                   ) -> tuple[Any, Any, list[dict[str, Any]]]:
        given = inputs.get("layout")
        layouts = [given if given is not None else
                   self.plan(p, s, opts.layout_temperature) for p, s in zip(prompts, seeds,
                                                                              strict=True)]
        text = self.text.encode(prompts)
        cond = GroundedCond(text, self.layout_batch(layouts))
        uncond = GroundedCond(Encoded.cat([uncond_text] * len(prompts)),
                              self.layout_batch([Layout(())] * len(prompts)))
        extras = [{"layout": lay.to_json(), "layout_source": "given" if given else "sampled",
                   "layout_temperature": opts.layout_temperature} for lay in layouts]
        return cond, uncond, extras
