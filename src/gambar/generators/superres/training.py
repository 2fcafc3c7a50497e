"""The superres family's TrainingTask: a super-resolution stage learns to draw the `[data]`
images (the stage's output size) from their box-downsampled copies, the prompt, and a random
noise-conditioning augmentation level (Imagen, sec. 2.4).

`[superres]` sets the factor and the augmentation; every [data], [text], [unet], [diffusion],
[sample] and [train] key is the diffusion family's. The prompt is dropped for classifier-free
guidance; the low-resolution image never is (a stage always has one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from gambar.config import dataclass_from_dict
from gambar.errors import InvalidInputError
from gambar.generators.diffusion.model import diffusion_loss
from gambar.generators.diffusion.training import DiffusionTask, require_frozen_minilm
from gambar.generators.superres.config import SuperResConfig
from gambar.generators.superres.model import (
    LowResCond,
    SuperResModel,
    aug_timesteps,
    augment,
    downsample,
    upsample,
)
from gambar.generators.superres.pipeline import SuperResPipeline
from gambar.imaging import make_grid
from gambar.tensors import to_image

GRID_ITEMS = 4  # training items shown in a sample grid (low-res, raised, truth for each)


class SuperResTask(DiffusionTask):
    SECTIONS = (*DiffusionTask.SECTIONS, "superres")
    SCHEMA: dict[str, type] = {**DiffusionTask.SCHEMA, "superres": SuperResConfig}

    def __init__(self, recipe: dict[str, Any]) -> None:
        superres = dataclass_from_dict(SuperResConfig, recipe.get("superres", {}),
                                       section="superres")
        require_frozen_minilm(recipe, "a super-resolution stage")
        super().__init__({k: v for k, v in recipe.items() if k != "superres"})
        low = self.cfg.image_size // superres.factor
        if self.cfg.image_size % superres.factor or low % 8:
            raise InvalidInputError(
                f"data.size {self.cfg.image_size} must be {superres.factor} x a multiple of 8 "
                "(the stage's output side; its input is that divided by superres.factor)")
        self.superres = superres
        self.model = SuperResModel(self.model.unet.cfg)  # type: ignore[assignment]

    def low_res_condition(self, images: torch.Tensor, text: Any, generator: torch.Generator
                          ) -> LowResCond:
        """The batch's low-resolution copies, upsampled and noised at random levels."""
        factor, b = self.superres.factor, images.shape[0]
        low_up = upsample(downsample(images, factor), factor)
        levels = torch.rand(b, generator=generator) * self.superres.aug_max
        t_aug = aug_timesteps(levels, self.schedule)
        noise = torch.randn(low_up.shape, generator=generator, dtype=low_up.dtype)
        return LowResCond(text, augment(low_up, t_aug, noise, self.schedule), t_aug, low_up)

    def loss(self, model: torch.nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor:
        captions = list(batch["captions"])
        drop = torch.rand(len(captions), generator=generator) < self.cfg.caption_dropout
        captions = ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
        frozen = self.text.frozen
        assert frozen is not None
        images = batch["images"]
        cond = self.low_res_condition(images, frozen(captions), generator)
        # the stage diffuses the residual over the upsampled image (model.py)
        residual = (images - cond.base) * self.superres.residual_scale
        return diffusion_loss(lambda x, t: model(x, t, cond), self.schedule, self.cfg, residual,
                              generator)

    def pipeline(self, model: SuperResModel, extra: dict[str, Any] | None = None  # type: ignore[override]
                 ) -> SuperResPipeline:
        return SuperResPipeline(model, self.text, self.cfg, self.superres, name=self.name,
                                extra=extra)

    def sample_grid(self, model: torch.nn.Module) -> Image.Image:
        """Rows of (the low-resolution input, the stage's output, the truth) for a few items."""
        was_training = model.training
        pipe = self.pipeline(model)  # type: ignore[arg-type]
        items = [self._item(i) for i in range(GRID_ITEMS)]
        size, factor = self.cfg.image_size, self.superres.factor
        lows = [to_image(downsample(x[None], factor)[0]) for x, _ in items]
        opts = pipe.default_options
        out = pipe.draw([c for _, c in items], list(range(GRID_ITEMS)), opts,
                        {"image": lows}, GRID_ITEMS, False)
        model.train(was_training)
        cells = []
        for low, gen, (truth, _) in zip(lows, out, items, strict=True):
            cells += [low.resize((size, size), Image.Resampling.NEAREST), gen.image,
                      to_image(truth)]
        return make_grid(cells, cols=3)

    def export(self, model: torch.nn.Module, path: Path, summary: dict[str, Any]) -> None:
        extra = {"name": self.name, "training": summary, "data": self.data_summary}
        self.pipeline(model, extra).save(path)  # type: ignore[arg-type]
