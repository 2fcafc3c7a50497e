"""The grounded family's TrainingTask: both stages in one run, one optimiser each.

Each step trains the image stage on the batch's true layouts (the diffusion loss, prompt and
layout dropped together for classifier-free guidance), then the layout stage on the same captions
(cross-entropy of the layout written as pointers and box edges). `[grounding]` and `[planner]`
configure the two; every [data], [text], [unet], [diffusion] and [sample] key is the diffusion
family's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from gambar.config import dataclass_from_dict
from gambar.data.batches import endless_batches
from gambar.data.layouts import GroundedObject, training_layout
from gambar.data.mix import training_item
from gambar.errors import InvalidInputError
from gambar.generators.diffusion.model import diffusion_loss
from gambar.generators.diffusion.training import DiffusionTask, require_frozen_minilm
from gambar.generators.grounded.grounding import (
    GroundedCond,
    GroundingConfig,
    LayoutBatch,
    PhraseCache,
)
from gambar.generators.grounded.model import GroundedModel
from gambar.generators.grounded.pipeline import GroundedPipeline
from gambar.generators.grounded.planner import PlannerConfig, encode_targets, planner_input
from gambar.train.task import Update

Item = tuple[torch.Tensor, str, tuple[GroundedObject, ...]]


@dataclass(frozen=True)
class InitConfig:
    """`[init]`: `image_from` names a trained grounded model whose image stage is taken as it
    is (frozen, not optimised); the run then trains the layout stage alone, a few times faster
    per step. Its [unet], [grounding] and [diffusion] must be the recipe's."""

    image_from: str = ""


def token_span(offsets: list[tuple[int, int]], span: tuple[int, int]) -> tuple[int, int] | None:
    """First and last token (indices into the encoder's states) covering characters span."""
    hits = [i for i, (a, b) in enumerate(offsets) if b > a and a < span[1] and b > span[0]]
    return (hits[0], hits[-1]) if hits else None


def planner_batch(encoder: torch.nn.Module, captions: Sequence[str],
                  layouts: Sequence[Sequence[GroundedObject]], cfg: PlannerConfig
                  ) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """What the layout stage reads for `captions` and its target choice sequences."""
    states, mask = planner_input(encoder, captions, cfg)
    targets = []
    for offsets, layout in zip(encoder.offsets(list(captions)), layouts,  # type: ignore[operator]
                               strict=True):
        objects = []
        for o in layout:
            tokens = token_span(offsets, o.span)
            if tokens is not None:  # None: the phrase was cut off by the encoder's max length
                objects.append((*tokens, o.box))
        targets.append(encode_targets(objects, cfg))
    return states, mask, targets


def _collate(items: list[Item]) -> dict[str, Any]:
    return {"images": torch.stack([x for x, _, _ in items]),
            "captions": [c for _, c, _ in items], "layouts": [lay for _, _, lay in items]}


class GroundedTask(DiffusionTask):
    SECTIONS = (*DiffusionTask.SECTIONS, "grounding", "planner", "init")
    SCHEMA: dict[str, type] = {**DiffusionTask.SCHEMA, "grounding": GroundingConfig,
                               "planner": PlannerConfig, "init": InitConfig}

    def __init__(self, recipe: dict[str, Any]) -> None:
        try:
            grounding = dataclass_from_dict(GroundingConfig, recipe.get("grounding", {}),
                                            section="grounding")
            planner = dataclass_from_dict(PlannerConfig, recipe.get("planner", {}),
                                          section="planner")
            init = dataclass_from_dict(InitConfig, recipe.get("init", {}), section="init")
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        require_frozen_minilm(recipe, "the grounded family")
        super().__init__({k: v for k, v in recipe.items()
                          if k not in ("grounding", "planner", "init")})
        if planner.text_dim != self.text.dim:
            raise InvalidInputError(f"planner.text_dim must be the encoder's width {self.text.dim}")
        unet_cfg = self.model.unet.cfg
        self.model = GroundedModel(unet_cfg, grounding, planner)  # type: ignore[assignment]
        self.planner_cfg = planner
        self.phrases = PhraseCache(self.text.frozen, grounding.phrase)
        self.planner_only = bool(init.image_from)
        if self.planner_only:
            self._take_image_stage(init.image_from)

    def _take_image_stage(self, source: str) -> None:
        """The image stage of a trained grounded model, frozen, in place of a fresh one."""
        from gambar.model_dir import resolve_model

        trained = GroundedPipeline.load(resolve_model(source))
        image = trained.grounded.image
        ours = self.model.image  # type: ignore[union-attr]
        for name, a, b in (("unet", image.unet.cfg, ours.unet.cfg),
                           ("grounding", image.grounding.cfg, ours.grounding.cfg),
                           ("diffusion", trained.cfg, self.cfg)):
            if asdict(a) != asdict(b):
                raise InvalidInputError(
                    f"init.image_from {source}: its [{name}] differs from this recipe's; copy "
                    "that model's settings into the recipe")
        image.requires_grad_(False)
        self.model.image = image  # type: ignore[union-attr]

    def _grounded_item(self, index: int) -> Item:
        image, caption, labels = training_item(self.stream, self.mix, index)
        return image, caption, training_layout(image, caption, labels)

    def batches(self, start: int, rank: int, world_size: int, batch_size: int) -> Iterator[Any]:
        return endless_batches(self._grounded_item, _collate, start=start, rank=rank,
                               world_size=world_size, batch_size=batch_size)

    def param_groups(self, model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
        groups = {k: list(v) for k, v in model.groups().items()}  # type: ignore[operator]
        return {"planner": groups["planner"]} if self.planner_only else groups

    def step(self, model: torch.nn.Module, batch: Any, generator: torch.Generator,
             step: int) -> Iterator[Update]:
        captions, layouts = list(batch["captions"]), list(batch["layouts"])
        frozen = self.text.frozen
        assert frozen is not None
        if not self.planner_only:
            yield self._image_update(model, captions, layouts, batch["images"], generator)
        # The layout stage: every caption, its layout as pointers and box edges.
        states, mask, targets = planner_batch(frozen, captions, layouts, self.planner_cfg)
        yield Update("planner", model("planner", states, mask, targets))

    def _image_update(self, model: torch.nn.Module, captions: list[str],
                      layouts: list[tuple[GroundedObject, ...]], images: torch.Tensor,
                      generator: torch.Generator) -> Update:
        frozen = self.text.frozen
        assert frozen is not None
        # The image stage: true layouts; the prompt and its layout are dropped together.
        drop = (torch.rand(len(captions), generator=generator) < self.cfg.caption_dropout).tolist()
        shown = ["" if d else c for c, d in zip(captions, drop, strict=True)]
        grounded = [[] if d else [(c[o.span[0]:o.span[1]], o.box) for o in lay]
                    for c, lay, d in zip(captions, layouts, drop, strict=True)]
        embeddings = iter(self.phrases([p for g in grounded for p, _ in g]))
        layout = LayoutBatch.build([[(next(embeddings), box) for _, box in g] for g in grounded],
                                   self.text.dim)
        cond = GroundedCond(frozen(shown), layout)
        loss = diffusion_loss(lambda x, t: model("image", x, t, cond), self.schedule, self.cfg,
                              images, generator)
        return Update("image", loss)

    def ema_target(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.planner if self.planner_only else model  # type: ignore[return-value]

    def pipeline(self, model: GroundedModel, extra: dict[str, Any] | None = None  # type: ignore[override]
                 ) -> GroundedPipeline:
        return GroundedPipeline(model, self.text, self.cfg, name=self.name, extra=extra)
