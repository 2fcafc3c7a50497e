"""The GAN family's TrainingTask: two optimisers ("d", "g"), EMA on the generator, the frozen
MiniLM for the captions, and the diffusion family's data (`[data]`, the same stream and mix).

Each step updates the discriminator, then the generator against the updated discriminator
(the loop applies an update before asking for the next); every noise draw comes from the
run's generator, so a resumed run replays exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gambar.config import dataclass_from_dict
from gambar.data.batches import endless_batches
from gambar.data.mix import recipe_data, training_item
from gambar.errors import InvalidInputError
from gambar.generators.diffusion.training import (
    SampleConfig,
    _collate,
    require_frozen_minilm,
)
from gambar.generators.gan.config import GanConfig
from gambar.generators.gan.layout import BOX_STREAM, LayoutRecipe, ObjectMasks, item_objects
from gambar.generators.gan.model import GanBatch, GanModel, GanNoise
from gambar.generators.gan.pipeline import GanPipeline
from gambar.generators.grounded.grounding import PhraseCache
from gambar.generators.grounded.planner import LayoutPlanner
from gambar.text.setup import TextSetup
from gambar.train.recipe import check_sections
from gambar.train.task import Update, prompt_grid

Item = tuple[torch.Tensor, str, list[tuple[torch.Tensor, str]]]  # image, caption, objects


def _collate_objects(items: list[Item]) -> dict[str, Any]:
    return {**_collate([(image, caption) for image, caption, _ in items]),
            "objects": [objects for _, _, objects in items]}


class GanTask:
    SECTIONS = ("data", "text", "gan", "layout", "sample")
    SCHEMA: dict[str, type] = {"gan": GanConfig, "layout": LayoutRecipe, "sample": SampleConfig}

    def __init__(self, recipe: dict[str, Any]) -> None:
        check_sections(recipe, self.SECTIONS)
        require_frozen_minilm(recipe, "a GAN")
        section = dict(recipe.get("gan", {}))
        size = recipe.get("data", {}).get("size")
        if size is not None and section.setdefault("image_size", size) != size:
            raise InvalidInputError(
                f"data.size = {size!r} and gan.image_size = {section['image_size']!r} "
                "disagree; set only data.size (the size the GAN trains and draws at)")
        cfg = GanConfig.from_dict(section)
        layout = dataclass_from_dict(LayoutRecipe, recipe.get("layout", {}), section="layout")
        if "layout" in recipe and not cfg.layout:
            raise InvalidInputError("a [layout] section needs [gan] layout = true")
        sample = dataclass_from_dict(SampleConfig, recipe.get("sample", {}), section="sample")
        self.planner = _planner(layout.planner) if cfg.layout and layout.planner else None
        self.box_fraction = layout.box_fraction
        spec = recipe_data(recipe.get("data", {}), default_size=cfg.image_size)
        self.stream, self.mix, self.data_summary = spec.stream, spec.mix, spec.summary
        self.text = TextSetup.build("minilm")
        self.phrases = PhraseCache(self.text.frozen)  # type: ignore[arg-type]
        self.model = GanModel(cfg, self.text.dim)
        self.cfg = cfg
        self.sample_prompts, self.sample_seed = list(sample.prompts), sample.seed
        self.name = str(recipe.get("name", "gan"))

    def _item(self, index: int) -> tuple[torch.Tensor, str]:
        image, caption, _ = training_item(self.stream, self.mix, index)
        return image, caption

    def _layout_item(self, index: int) -> Item:
        """A layout model's item: image, caption, and each object's mask and phrase (boxes for
        `box_fraction` of the items, drawn per item from the data seed and the index)."""
        image, caption, labels = training_item(self.stream, self.mix, index)
        boxes = np.random.default_rng([self.stream.seed, index, BOX_STREAM]).random()
        return image, caption, item_objects(image, caption, labels, boxes < self.box_fraction)

    def batches(self, start: int, rank: int, world_size: int, batch_size: int) -> Iterator[Any]:
        if self.cfg.layout:
            return endless_batches(self._layout_item, _collate_objects, start=start, rank=rank,
                                   world_size=world_size, batch_size=batch_size)
        return endless_batches(self._item, _collate, start=start, rank=rank,
                               world_size=world_size, batch_size=batch_size)

    def param_groups(self, model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
        gan: GanModel = model  # type: ignore[assignment]
        return {"d": list(gan.discriminator.parameters()), "g": list(gan.generator.parameters())}

    def ema_target(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.generator  # type: ignore[return-value]

    def gan_batch(self, batch: dict[str, Any]) -> GanBatch:
        images = batch["images"]
        with torch.no_grad():
            enc = self.text.encode(batch["captions"])
        layout = None
        if self.cfg.layout:
            layout = self.objects(batch["objects"]).to(images.device)
        return GanBatch(images, enc.pooled.to(images.device), enc.states.to(images.device),
                        enc.mask.to(images.device), layout)

    def objects(self, layouts: list[list[tuple[torch.Tensor, str]]]) -> ObjectMasks:
        """Masks and phrase vectors (the frozen MiniLM's, memoised) of a batch of layouts."""
        vectors = iter(self.phrases([phrase for lay in layouts for _, phrase in lay]))
        return ObjectMasks.build([[(mask, next(vectors)) for mask, _ in lay] for lay in layouts],
                                 self.cfg.image_size, self.text.dim)

    def noise(self, n: int, generator: torch.Generator, device: torch.device) -> GanNoise:
        def draw(width: int) -> torch.Tensor:
            return torch.randn(n, width, generator=generator).to(device)

        cfg = self.cfg
        return GanNoise(draw(cfg.z_dim), draw(cfg.cond_dim), draw(cfg.z_dim), draw(cfg.cond_dim))

    def step(self, model: torch.nn.Module, batch: Any, generator: torch.Generator,
             step: int) -> Iterator[Update]:
        gan_batch = self.gan_batch(batch)
        for part in ("d", "g"):
            noise = self.noise(len(gan_batch.images), generator, gan_batch.images.device)
            loss, logs = model(gan_batch, noise, part=part)
            yield Update(part, loss, logs)

    def pipeline(self, model: GanModel, extra: dict[str, Any] | None = None) -> GanPipeline:
        return GanPipeline(model, self.text, planner=self.planner, name=self.name, extra=extra)

    def sample_grid(self, model: torch.nn.Module) -> Image.Image:
        return prompt_grid(self.pipeline(model), model,  # type: ignore[arg-type]
                           self.sample_prompts, self.sample_seed)

    def export(self, model: torch.nn.Module, path: Path, summary: dict[str, Any]) -> None:
        extra = {"name": self.name, "training": summary, "data": self.data_summary}
        self.pipeline(model, extra).save(path)  # type: ignore[arg-type]


def _planner(source: str) -> LayoutPlanner:
    """The layout stage of a trained grounded model, frozen (a GAN carries it, never trains it)."""
    from gambar.generators.grounded.pipeline import GroundedPipeline
    from gambar.model_dir import resolve_model

    planner = GroundedPipeline.load(resolve_model(source)).grounded.planner
    return planner.eval().requires_grad_(False)
