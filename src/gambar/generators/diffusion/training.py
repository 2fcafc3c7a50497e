"""The diffusion family's TrainingTask: data stream, loss, sample grids and export.

`[data]`: source ("shapes"), size, seed, languages, and optionally `mix = {shapes = 6, emoji = 1,
glyphs = 1}` to train on a weighted mix of the shapes stream and other datasets (held-out pairs
filtered from every source).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from gambar.config import dataclass_from_dict
from gambar.data.batches import endless_batches
from gambar.data.mix import recipe_data, training_item
from gambar.errors import InvalidInputError
from gambar.generators.diffusion.config import DiffusionConfig
from gambar.generators.diffusion.model import DiffusionModel, build_schedule, diffusion_loss
from gambar.generators.diffusion.pipeline import (
    MAX_SIZE,
    DiffusionPipeline,
    check_pixel_channels,
)
from gambar.generators.diffusion.unet import PRESETS, UNetConfig
from gambar.text.base import Encoded
from gambar.text.setup import TextSetup
from gambar.train.recipe import check_sections, text_section
from gambar.train.task import Update, prompt_grid

# Training above generate()'s largest size made a model whose own size its load() refused.
MAX_SAMPLE_SIZE = MAX_SIZE
TOKENIZER_CAPTIONS = 4000  # stream items whose captions teach a small encoder its vocabulary
DEFAULT_SAMPLE_PROMPTS = (
    "a red circle", "three blue stars", "a large yellow triangle",
    "a green square to the left of a purple heart",
    "sebuah lingkaran merah", "dua bintang biru", "segitiga kuning besar",
    "persegi hijau di atas hati ungu",
)


@dataclass(frozen=True)
class SampleConfig:
    """`[sample]`: the prompts and first seed of the grids drawn during training."""

    prompts: tuple[str, ...] = DEFAULT_SAMPLE_PROMPTS
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.prompts:
            raise InvalidInputError("sample.prompts is empty; give at least one prompt")
        if self.seed < 0:
            raise InvalidInputError(f"sample.seed must be >= 0, got {self.seed}")


def _unet_config(section: dict[str, Any], text_dim: int = UNetConfig.text_dim) -> UNetConfig:
    """`[unet]`: a preset and the keys that change it. text_dim is the text encoder's width."""
    section = dict(section)
    preset = section.pop("preset", "unet-s")
    if not isinstance(preset, str) or preset not in PRESETS:
        raise InvalidInputError(f"unknown UNet preset {preset!r}; known: {', '.join(PRESETS)}")
    if "text_dim" in section:  # would be overwritten: the encoder decides the width
        raise InvalidInputError("unet.text_dim is set by the text encoder's width; remove it "
                                "(change [text] dim instead)")
    base = asdict(PRESETS[preset])
    base.update(section)
    base["text_dim"] = text_dim
    return dataclass_from_dict(UNetConfig, base, section="unet")


@dataclass(frozen=True)
class DiffusionRecipe:
    """A diffusion recipe's sections, checked; `[data]` is `recipe_data`'s to read."""

    diffusion: DiffusionConfig  # image_size: the data's size when [data] gives none
    unet: UNetConfig  # text_dim is a placeholder until the text encoder is built
    text_kind: str
    text_sizes: dict[str, Any]
    sample: SampleConfig


def read_recipe(recipe: dict[str, Any]) -> DiffusionRecipe:
    """Check every section and key but [data]'s, cheaply: no data drawn, no encoder built."""
    check_sections(recipe, DiffusionTask.SECTIONS)
    diffusion = recipe.get("diffusion", {})
    cfg = dataclass_from_dict(DiffusionConfig, diffusion, section="diffusion")
    # `[data] size` is the image size; `[diffusion] image_size` alone names it too, and both set
    # and different is a conflict (the model would be configured for one, trained on the other).
    size = recipe.get("data", {}).get("size")
    if size is not None and "image_size" in diffusion and size != cfg.image_size:
        raise InvalidInputError(
            f"data.size = {size!r} and diffusion.image_size = {cfg.image_size} disagree; set only "
            "data.size (the size the model trains and samples at)"
        )
    unet = _unet_config(recipe.get("unet", {}))
    check_pixel_channels(unet)  # a latent model's UNet takes its autoencoder's channels later
    _check_size(size if size is not None else cfg.image_size,
                "data.size" if size is not None else "diffusion.image_size", unet)
    kind, sizes = text_section(recipe.get("text", {"kind": "minilm"}), "minilm")
    return DiffusionRecipe(
        diffusion=cfg,
        unet=unet,
        text_kind=kind,
        text_sizes=sizes,
        sample=dataclass_from_dict(SampleConfig, recipe.get("sample", {}), section="sample"),
    )


def require_frozen_minilm(recipe: dict[str, Any], what: str) -> None:
    """A one-line error, before any data work, when a family that reads the frozen MiniLM is
    given another [text] encoder."""
    text = recipe.get("text", {})
    if isinstance(text, dict) and text.get("kind", "minilm") != "minilm":
        raise InvalidInputError(f"{what} reads the frozen MiniLM encoder: set [text] kind = "
                                "\"minilm\"")


def _check_size(size: Any, key: str, unet: UNetConfig) -> None:
    """A size the model can train at and then sample at: a multiple of the UNet's stride, and
    no larger than generate() allows (else the trained model could never be loaded)."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        return  # not a size at all: recipe_data's message says what one is
    if size > MAX_SAMPLE_SIZE:
        raise InvalidInputError(
            f"{key} = {size} is larger than {MAX_SAMPLE_SIZE}, the largest size a diffusion "
            f"model samples at; train at {MAX_SAMPLE_SIZE} or less")
    stride = unet.stride
    if size % stride:
        below, above = size - size % stride, size - size % stride + stride
        raise InvalidInputError(
            f"{key} = {size} does not fit the UNet's downsampling (unet.patch_size "
            f"{unet.patch_size} and {len(unet.channel_mults)} levels): use a multiple of "
            f"{stride}, such as {', '.join(str(n) for n in (below, above) if n > 0)}")


def _collate(items: list[tuple[torch.Tensor, str]]) -> dict[str, Any]:
    return {"images": torch.stack([image for image, _ in items]),
            "captions": [caption for _, caption in items]}


class DiffusionTask:
    """Builds everything one diffusion training run needs from its recipe dict."""

    # the sections a recipe may hold besides [train]; any other is an error
    SECTIONS = ("data", "text", "unet", "diffusion", "sample")
    # recipe sections --set may override, checked against these dataclasses
    SCHEMA: dict[str, type] = {"diffusion": DiffusionConfig, "unet": UNetConfig,
                               "sample": SampleConfig}

    def __init__(self, recipe: dict[str, Any]) -> None:
        sections = read_recipe(recipe)  # every mistake in them before any data work
        spec = recipe_data(recipe.get("data", {}), default_size=sections.diffusion.image_size)
        self.stream, self.mix = spec.stream, spec.mix
        self.cfg = replace(sections.diffusion, image_size=self.stream.size)
        captions = ([self._item(i)[1] for i in range(TOKENIZER_CAPTIONS)]
                    if sections.text_kind == "small" else [])
        self.text = TextSetup.build(sections.text_kind, captions, **sections.text_sizes)
        self.model = DiffusionModel(replace(sections.unet, text_dim=self.text.dim),
                                    self.text.trainable)
        self.schedule = build_schedule(self.cfg)
        self.sample_prompts = list(sections.sample.prompts)
        self.sample_seed = sections.sample.seed
        self.name = str(recipe.get("name", "model"))
        self.data_summary = spec.summary

    def _item(self, index: int) -> tuple[torch.Tensor, str]:
        """(image, caption) of training item `index`: the shapes stream's, or the mix's."""
        image, caption, _ = training_item(self.stream, self.mix, index)
        return image, caption

    def batches(self, start: int, rank: int, world_size: int, batch_size: int) -> Iterator[Any]:
        return endless_batches(self._item, _collate, start=start, rank=rank,
                               world_size=world_size, batch_size=batch_size)

    def param_groups(self, model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
        return {"model": list(model.parameters())}  # one AdamW over the UNet and trainable text

    def ema_target(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def step(self, model: torch.nn.Module, batch: Any, generator: torch.Generator,
             step: int) -> Iterator[Update]:
        yield Update("model", self.loss(model, batch, generator))

    def loss(self, model: torch.nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor:
        """The diffusion loss of one batch, its caption dropout drawn from `generator`."""
        captions = list(batch["captions"])
        drop = torch.rand(len(captions), generator=generator) < self.cfg.caption_dropout
        captions = ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
        cond: Encoded | list[str] = captions
        if self.text.frozen is not None:
            cond = self.text.frozen(captions)
        return diffusion_loss(lambda x, t: model(x, t, cond), self.schedule, self.cfg,
                              batch["images"], generator)

    def pipeline(self, model: DiffusionModel, extra: dict[str, Any] | None = None
                 ) -> DiffusionPipeline:
        return DiffusionPipeline(model, self.text, self.cfg, name=self.name, extra=extra)

    def sample_grid(self, model: torch.nn.Module) -> Image.Image:
        return prompt_grid(self.pipeline(model), model,  # type: ignore[arg-type]
                           self.sample_prompts, self.sample_seed)

    def export(self, model: torch.nn.Module, path: Path, summary: dict[str, Any]) -> None:
        extra = {"name": self.name, "training": summary, "data": self.data_summary}
        self.pipeline(model, extra).save(path)  # type: ignore[arg-type]
