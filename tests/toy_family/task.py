"""The toy family's TrainingTask: generated box images, two optimisers, EMA on the generator.

Item i of the data is a function of (data.seed, i) alone: a colour and a language pick the
caption ("a red box" / "kotak merah"), a random box is the layout, and the image is that colour
in that box on white. Each step updates the discriminator, then the generator.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from gambar.config import check_range, dataclass_from_dict
from gambar.data.batches import endless_batches
from gambar.imaging import make_grid
from gambar.inputs import Box, Layout
from gambar.seeding import MAX_SEED
from gambar.train.recipe import check_sections
from gambar.train.task import Update
from toy_family.model import ToyConfig, ToyGAN, layout_mask

# colour -> (RGB, English word, Indonesian word)
COLOURS = {
    "red": ((220, 30, 30), "red", "merah"),
    "green": ((30, 160, 60), "green", "hijau"),
    "blue": ((30, 60, 220), "blue", "biru"),
    "yellow": ((240, 200, 20), "yellow", "kuning"),
    "purple": ((140, 40, 180), "purple", "ungu"),
    "orange": ((250, 130, 20), "orange", "oranye"),
}
MIN_SIDE = 0.25  # a box covers at least this fraction of the image side

# A seconds-long recipe (the contract test's, and a template for the toy's tests).
TINY_RECIPE: dict[str, Any] = {
    "family": "toy",
    "name": "toy-tiny",
    "data": {"seed": 0},
    "model": {"size": 16, "z_dim": 8, "text_dim": 8, "g_width": 16, "d_width": 16},
    "train": {
        "steps": 20, "batch_size": 8, "lr": 2e-3, "betas": [0.5, 0.99], "weight_decay": 0.0,
        "ema_decay": 0.9, "checkpoint_every": 10, "sample_every": 0, "log_every": 5,
        "run_dir": "runs/toy-tiny",
        # the discriminator's own optimiser settings: [train.optimizers.d]
        "optimizers": {"d": {"lr": 4e-3}},
    },
}


@dataclass(frozen=True)
class ToyData:
    """`[data]` of a toy recipe."""

    seed: int = 0

    def __post_init__(self) -> None:
        check_range("data.seed", self.seed, 0, MAX_SEED)


class ToyItem(NamedTuple):
    """One training item: the image in [-1, 1], its caption and its layout (the box)."""

    image: torch.Tensor
    caption: str
    layout: Layout


def toy_item(seed: int, index: int, size: int) -> ToyItem:
    """Item `index` of the data of `seed`: a coloured box on white, with its caption."""
    rng = np.random.default_rng([seed, index])
    rgb, english, indonesian = COLOURS[list(COLOURS)[rng.integers(len(COLOURS))]]
    caption = f"a {english} box" if rng.integers(2) == 0 else f"kotak {indonesian}"
    smallest = round(MIN_SIDE * size)
    w, h = (int(rng.integers(smallest, size + 1)) for _ in range(2))
    x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
    colour = torch.tensor(rgb, dtype=torch.float32) / 127.5 - 1
    image = torch.ones(3, size, size)  # white, in the [-1, 1] pixel convention
    image[:, y0:y0 + h, x0:x0 + w] = colour[:, None, None]
    box = Box(x0 / size, y0 / size, (x0 + w) / size, (y0 + h) / size, caption)
    return ToyItem(image, caption, Layout((box,)))


class ToyTask:
    """Builds one toy GAN training run from its recipe dict."""

    SECTIONS = ("data", "model")  # besides [train]
    SCHEMA: dict[str, type] = {"data": ToyData, "model": ToyConfig}  # sections --set may add to

    def __init__(self, recipe: dict[str, Any]) -> None:
        check_sections(recipe, self.SECTIONS)
        self.data = dataclass_from_dict(ToyData, recipe.get("data", {}), section="data")
        self.cfg = ToyConfig.from_dict(recipe.get("model", {}))
        self.model = ToyGAN(self.cfg)
        self.name = str(recipe.get("name", "toy"))

    def item(self, index: int) -> ToyItem:
        return toy_item(self.data.seed, index, self.cfg.size)

    def _collate(self, items: list[ToyItem]) -> dict[str, Any]:
        return {"images": torch.stack([it.image for it in items]),
                "captions": [it.caption for it in items],
                "masks": torch.stack([layout_mask(it.layout, self.cfg.size) for it in items])}

    def batches(self, start: int, rank: int, world_size: int, batch_size: int) -> Iterator[Any]:
        return endless_batches(self.item, self._collate, start=start, rank=rank,
                               world_size=world_size, batch_size=batch_size)

    def param_groups(self, model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
        gan: ToyGAN = model  # type: ignore[assignment]
        return {"g": list(gan.generator.parameters()), "d": list(gan.discriminator.parameters())}

    def ema_target(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.generator  # type: ignore[return-value]

    def step(self, model: torch.nn.Module, batch: Any, generator: torch.Generator,
             step: int) -> Iterator[Update]:
        """The discriminator's update, then the generator's against the updated discriminator;
        each draws its own noise from `generator`."""
        images, captions, masks = batch["images"], batch["captions"], batch["masks"]
        for part in ("d", "g"):
            z = torch.randn(len(captions), self.cfg.z_dim, generator=generator).to(images.device)
            loss, logs = model(images, captions, masks, z, part=part)
            yield Update(part, loss, logs)

    def sample_grid(self, model: torch.nn.Module) -> Image.Image:
        """Eight fixed captions and boxes, drawn from fixed noise."""
        items = [self.item(i) for i in range(8)]
        z = torch.randn(len(items), self.cfg.z_dim, generator=torch.Generator().manual_seed(0))
        masks = torch.stack([layout_mask(it.layout, self.cfg.size) for it in items])
        images = model.draw(z, [it.caption for it in items], masks)  # type: ignore[operator]
        pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
        return make_grid([Image.fromarray(p.permute(1, 2, 0).numpy(), "RGB") for p in pixels],
                         cols=4, scale=4)

    def export(self, model: torch.nn.Module, path: Path, summary: dict[str, Any]) -> None:
        """The (EMA) model as a toy model directory, with the training summary."""
        from toy_family.pipeline import ToyPipeline

        extra = {"name": self.name, "training": summary, "data": {"seed": self.data.seed}}
        ToyPipeline.from_training(model, self.cfg, name=self.name,  # type: ignore[arg-type]
                                  extra=extra).save(path)
