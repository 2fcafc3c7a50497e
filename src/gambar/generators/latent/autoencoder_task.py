"""The autoencoder family's TrainingTask: a KL autoencoder learns to reconstruct `[data]`'s
images (shapes, emoji, glyphs at the latent model's size). At export the latent scale factor is
measured on held-back training items and stored, with the reconstruction PSNR there.

A trained autoencoder is a part, not a generator: a latent recipe names it
(`[latent] autoencoder = "runs/ae/model"`) and the latent model carries a copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from gambar.config import dataclass_from_dict
from gambar.data.batches import endless_batches
from gambar.data.mix import recipe_data, training_item
from gambar.errors import InvalidInputError
from gambar.generators.latent.autoencoder import Autoencoder, AutoencoderConfig, psnr
from gambar.imaging import make_grid
from gambar.tensors import to_image
from gambar.train.recipe import check_sections
from gambar.train.task import Update

SCALE_ITEMS = 256  # items the latent scale and the export's PSNR are measured on
SCALE_OFFSET = 10**9  # ... taken this far into the stream, past anything a run trains on
GRID_ITEMS = 4


class AutoencoderTask:
    SECTIONS = ("data", "autoencoder")
    SCHEMA: dict[str, type] = {"autoencoder": AutoencoderConfig}

    def __init__(self, recipe: dict[str, Any]) -> None:
        check_sections(recipe, self.SECTIONS)
        cfg = dataclass_from_dict(AutoencoderConfig, recipe.get("autoencoder", {}),
                                  section="autoencoder")
        spec = recipe_data(recipe.get("data", {}), default_size=128)
        if spec.stream.size % cfg.factor:
            raise InvalidInputError(f"data.size {spec.stream.size} must be a multiple of the "
                                    f"autoencoder's factor {cfg.factor}")
        self.stream, self.mix, self.data_summary = spec.stream, spec.mix, spec.summary
        self.model = Autoencoder(cfg)
        self.name = str(recipe.get("name", "autoencoder"))

    def _item(self, index: int) -> torch.Tensor:
        return training_item(self.stream, self.mix, index)[0]

    def batches(self, start: int, rank: int, world_size: int, batch_size: int) -> Iterator[Any]:
        return endless_batches(self._item, torch.stack, start=start, rank=rank,
                               world_size=world_size, batch_size=batch_size)

    def param_groups(self, model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
        return {"model": list(model.parameters())}

    def ema_target(self, model: torch.nn.Module) -> torch.nn.Module | None:
        return None  # a reconstruction network converges without one

    def step(self, model: torch.nn.Module, batch: Any, generator: torch.Generator,
             step: int) -> Iterator[Update]:
        loss, logs = model(batch, generator)
        yield Update("model", loss, logs)

    def held_back(self) -> torch.Tensor:
        return torch.stack([self._item(SCALE_OFFSET + i) for i in range(SCALE_ITEMS)])

    @torch.no_grad()
    def sample_grid(self, model: torch.nn.Module) -> Image.Image:
        """Rows of (an image, its reconstruction)."""
        was_training = model.training
        model.eval()
        images = torch.stack([self._item(SCALE_OFFSET + i) for i in range(GRID_ITEMS)])
        recon = model.net.decode(model.net.encode(images).latent_dist.mean).sample  # type: ignore[union-attr,operator]
        model.train(was_training)
        cells = [im for pair in zip(images, recon, strict=True) for im in map(to_image, pair)]
        return make_grid(cells, cols=2)

    @torch.no_grad()
    def export(self, model: torch.nn.Module, path: Path, summary: dict[str, Any]) -> None:
        model.eval()
        images = self.held_back()
        ae: Autoencoder = model  # type: ignore[assignment]
        scaled = ae.with_scale(ae.measured_scale(images))
        recon = scaled.decode(scaled.encode(images))
        scaled.extra = {"name": self.name, "data": self.data_summary,
                        "training": {**summary, "held_back_psnr_db": round(psnr(recon, images), 2),
                                     "held_back_items": SCALE_ITEMS}}
        scaled.save(path)
