"""The contrastive family's TrainingTask: shapes stream, symmetric InfoNCE, similarity grids.

Recipe sections: `[data]` (source, size, seed, languages, limit, and `mix = {shapes = 6, emoji =
1, glyphs = 1}` to train on a weighted mix with gambar's other data), `[text]` (kind + small-encoder
sizes), `[model]` (preset + ContrastiveConfig keys), `[train]` (the shared loop's).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gambar.config import dataclass_from_dict
from gambar.contrastive.model import (
    PRESETS,
    ContrastiveConfig,
    ContrastiveModel,
    ContrastiveNet,
    contrastive_loss,
)
from gambar.data.batches import endless_batches
from gambar.data.mix import item_key, recipe_data
from gambar.data.shapes import SPLIT_SEEDS, ShapesStream, to_tensor
from gambar.data.shapes_vocab import MIRRORED_RELATION, ObjectSpec, SceneSpec
from gambar.errors import InvalidInputError
from gambar.imaging import make_grid
from gambar.text.setup import TextSetup
from gambar.train.recipe import check_sections, text_section
from gambar.train.task import Update

TOKENIZER_CAPTIONS = 4000  # stream items whose captions teach a small encoder its vocabulary
GRID_ITEMS = 8  # validation pairs in the similarity grid a person looks at during training


def scene_key(scene: SceneSpec) -> str:
    """A canonical name for what a scene shows: equal keys = the same labels, whatever the wording.

    Objects without a relation are sorted ("a blue square and a red circle" = "a red circle and a
    blue square"); "B right of A" is rewritten as "A left of B".
    """
    def name(o: ObjectSpec) -> str:
        return " ".join(w for w in (o.size, o.color, o.shape) if w)

    objects, rel = scene.objects, scene.relation
    if rel is None:
        return " + ".join(sorted(name(o) for o in objects))
    a, relation, b = rel.subject, rel.relation, rel.other
    if relation in ("right of", "below"):
        a, relation, b = b, MIRRORED_RELATION[relation], a
    rest = sorted(name(o) for i, o in enumerate(objects) if i not in (a, b))
    return " + ".join([f"{name(objects[a])} {relation} {name(objects[b])}", *rest])


def _model_config(section: dict[str, Any], image_size: int) -> ContrastiveConfig:
    """`[model]`: a preset and the keys that change it, at the data's `image_size`."""
    section = dict(section)
    preset = section.pop("preset", "clip-s")
    if not isinstance(preset, str) or preset not in PRESETS:
        known = ", ".join(PRESETS)
        raise InvalidInputError(f"unknown contrastive preset {preset!r}; known: {known}")
    if section.get("image_size", image_size) != image_size:  # would be silently replaced
        raise InvalidInputError(
            f"model.image_size = {section['image_size']!r} and data.size = {image_size} "
            "disagree; set only data.size"
        )
    base = asdict(PRESETS[preset])
    base.update(section)
    base["image_size"] = image_size
    return dataclass_from_dict(ContrastiveConfig, base, section="model")


def _collate(items: list[tuple[torch.Tensor, str, str]]) -> dict[str, Any]:
    return {"images": torch.stack([image for image, _, _ in items]),
            "captions": [caption for _, caption, _ in items],
            "keys": [key for _, _, key in items]}


class ContrastiveTask:
    """Builds everything one contrastive training run needs from its recipe dict."""

    SECTIONS = ("data", "text", "model")  # besides [train]; any other section is an error
    SCHEMA: dict[str, type] = {"model": ContrastiveConfig}  # sections --set may add keys to

    def __init__(self, recipe: dict[str, Any]) -> None:
        check_sections(recipe, self.SECTIONS)
        data = dict(recipe.get("data", {}))
        # limit > 0 cycles over the first `limit` items: a fixed small set to overfit in tests
        self.limit = data.pop("limit", 0)
        if type(self.limit) is not int or self.limit < 0:
            raise InvalidInputError(f"data.limit must be an integer >= 0, got {self.limit!r}")
        kind, text_sizes = text_section(recipe.get("text", {"kind": "small"}), "small")
        model = recipe.get("model", {})
        # The data's size is the image tower's; a model.image_size alone names it too.
        default_size = model.get("image_size", 64)
        if type(default_size) is not int:
            raise InvalidInputError(f"'model.image_size' expects int, got {default_size!r}")
        if type(size := data.get("size", default_size)) is int:  # else recipe_data names it
            _model_config(model, size)  # its errors before any data work
        # Held-out pairs stay out of training, so retrieval on them measures zero-shot composition.
        spec = recipe_data(data, default_size=default_size)
        self.stream, self.mix = spec.stream, spec.mix
        n_captions = min(TOKENIZER_CAPTIONS, self.limit or TOKENIZER_CAPTIONS)
        captions = [self._item(i)[1] for i in range(n_captions)] if kind == "small" else []
        self.text = TextSetup.build(kind, captions, **text_sizes)
        self.cfg = _model_config(model, self.stream.size)
        self.model = ContrastiveNet(self.cfg, self.text.dim, self.text.trainable)
        self.name = str(recipe.get("name", "contrastive"))
        self.data_summary = {**spec.summary, "limit": self.limit,
                             "mix": spec.summary.get("mix", {"shapes": 1})}

    def _item(self, index: int) -> tuple[torch.Tensor, str, str]:
        """(image, caption, key) of training item `index`; equal keys show the same thing."""
        index = index % self.limit if self.limit else index
        if self.mix is None:
            sample = self.stream[index]
        else:
            source, n = self.mix.locate(index)
            if not isinstance(self.mix.sources[source], ShapesStream):
                image, caption, meta = self.mix[index]
                return image, caption, item_key(meta, caption)
            sample = self.mix.sources[source][n]
        return to_tensor(sample.image), sample.caption, scene_key(sample.scene)

    def batches(self, start: int, rank: int, world_size: int, batch_size: int) -> Iterator[Any]:
        """Endless batches {"images" (B, 3, S, S), "captions", "keys"}; rank r of W disjoint."""
        return endless_batches(self._item, _collate, start=start, rank=rank,
                               world_size=world_size, batch_size=batch_size)

    def param_groups(self, model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
        return {"model": list(model.parameters())}  # both towers and the logit scale

    def ema_target(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def step(self, model: torch.nn.Module, batch: Any, generator: torch.Generator,
             step: int) -> Iterator[Update]:
        yield Update("model", self.loss(model, batch, generator))

    def loss(self, model: torch.nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor:
        """Symmetric InfoNCE over the batch (Radford et al. 2021); needs no randomness."""
        cond = batch["captions"]
        if self.text.frozen is not None:
            cond = self.text.frozen(cond)
        # The logit scale is inside the net so DDP synchronises its gradient like any weight.
        return contrastive_loss(model(batch["images"], cond), batch["keys"])

    def wrap(self, model: ContrastiveNet, extra: dict[str, Any] | None = None
             ) -> ContrastiveModel:
        """The trained net (EMA copy or not) as a ContrastiveModel."""
        return ContrastiveModel(model, self.text, name=self.name, extra=extra)

    def sample_grid(self, model: torch.nn.Module) -> Image.Image:
        """Validation images above their caption-similarity matrix (a bright diagonal is good)."""
        was_training = model.training
        items = ShapesStream(SPLIT_SEEDS["val"], self.stream.size,
                             self.stream.languages).take(0, GRID_ITEMS)
        wrapped = self.wrap(model)  # type: ignore[arg-type]
        sims = wrapped.similarity([s.image for s in items], [s.caption for s in items]).numpy()
        model.train(was_training)
        s = self.stream.size
        cell = np.clip((sims + 1) * 127.5, 0, 255).astype(np.uint8)  # cosine -1..1 -> grey
        heat = Image.fromarray(cell, "L").resize((GRID_ITEMS * s, GRID_ITEMS * s),
                                                 Image.Resampling.NEAREST).convert("RGB")
        images = make_grid([s.image for s in items], cols=GRID_ITEMS, pad=0)
        out = Image.new("RGB", (heat.width, images.height + heat.height), (255, 255, 255))
        out.paste(images, (0, 0))
        out.paste(heat, (0, images.height))
        return out

    def export(self, model: torch.nn.Module, path: Path, summary: dict[str, Any]) -> None:
        """Save the (EMA) net as a contrastive model directory with the training summary."""
        extra = {"name": self.name, "training": summary, "data": self.data_summary}
        self.wrap(model, extra).save(path)  # type: ignore[arg-type]
