"""The latent family's TrainingTask: a text-conditional UNet learns to denoise the latents of a
trained autoencoder (`[latent] autoencoder = "runs/ae/model"`, frozen: neither optimised nor
checkpointed; the exported model carries a copy). `[data] size` is the image size in pixels;
the UNet works at size / f. Every other section is the diffusion family's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from gambar.config import dataclass_from_dict
from gambar.errors import InvalidInputError
from gambar.generators.diffusion.model import DiffusionModel
from gambar.generators.diffusion.training import DiffusionTask
from gambar.generators.latent.autoencoder import Autoencoder
from gambar.generators.latent.pipeline import LatentPipeline


@dataclass(frozen=True)
class LatentConfig:
    """`[latent]`: the trained autoencoder (a directory, or a run directory)."""

    autoencoder: str = ""


class LatentTask(DiffusionTask):
    SECTIONS = (*DiffusionTask.SECTIONS, "latent")
    SCHEMA: dict[str, type] = {**DiffusionTask.SCHEMA, "latent": LatentConfig}

    def __init__(self, recipe: dict[str, Any]) -> None:
        latent = dataclass_from_dict(LatentConfig, recipe.get("latent", {}), section="latent")
        if not latent.autoencoder:
            raise InvalidInputError('a latent recipe names its autoencoder: [latent] '
                                    'autoencoder = "runs/<autoencoder run>/model"')
        from gambar.model_dir import resolve_model

        autoencoder = Autoencoder.load(resolve_model(latent.autoencoder))  # before data work
        autoencoder.requires_grad_(False)
        super().__init__({k: v for k, v in recipe.items() if k != "latent"})
        f = autoencoder.cfg.factor
        unet = replace(self.model.unet.cfg, image_channels=autoencoder.cfg.latent_channels)
        if self.cfg.image_size % (f * unet.stride):
            raise InvalidInputError(
                f"data.size {self.cfg.image_size} must be a multiple of {f * unet.stride} (the "
                f"autoencoder's factor {f} times the UNet's stride {unet.stride})")
        self.model = DiffusionModel(unet, self.text.trainable)
        self.autoencoder = autoencoder

    def loss(self, model: torch.nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            latents = self.autoencoder.encode(batch["images"], generator)
        return super().loss(model, {**batch, "images": latents}, generator)

    def pipeline(self, model: DiffusionModel, extra: dict[str, Any] | None = None  # type: ignore[override]
                 ) -> LatentPipeline:
        return LatentPipeline(model, self.autoencoder, self.text, self.cfg, name=self.name,
                              extra=extra)

    def export(self, model: torch.nn.Module, path: Path, summary: dict[str, Any]) -> None:
        trained = {**summary, "autoencoder_sha256": self.autoencoder.sha256}
        extra = {"name": self.name, "training": trained, "data": self.data_summary}
        self.pipeline(model, extra).save(path)  # type: ignore[arg-type]
