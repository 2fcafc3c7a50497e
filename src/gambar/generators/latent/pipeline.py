"""Latent diffusion as a Pipeline (Rombach et al. 2022): the UNet and the samplers work on the
autoencoder's latents (f x f fewer positions); the autoencoder decodes the result. img2img
encodes the init image; inpainting keeps the unmasked latents (so, as in Stable Diffusion, the
kept pixels come back through the decoder: close to the init image, not equal to it).

One model directory holds both networks: "model" (the UNet) and "autoencoder".
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gambar.errors import InvalidInputError
from gambar.generators.diffusion.config import DiffusionConfig
from gambar.generators.diffusion.model import DiffusionModel
from gambar.generators.diffusion.options import MAX_SIZE
from gambar.generators.diffusion.pipeline import DiffusionPipeline, _section, read_sections
from gambar.generators.latent.autoencoder import Autoencoder
from gambar.generators.latent.options import LatentOptions
from gambar.model_dir import config_error, load_components, open_model_dir
from gambar.text.setup import TextSetup


class LatentPipeline(DiffusionPipeline):
    """Text -> encoder -> UNet over latents + stateless sampler -> autoencoder -> image."""

    family = "latent"
    Options = LatentOptions

    def __init__(self, model: DiffusionModel, autoencoder: Autoencoder, text: TextSetup,
                 cfg: DiffusionConfig, *, name: str = "unsaved", sha256: str = "",
                 extra: dict[str, Any] | None = None) -> None:
        self.autoencoder = autoencoder.eval()  # before super(): its checks sample shapes
        super().__init__(model, text, cfg, name=name, sha256=sha256, extra=extra)

    # ---- the sampler's space --------------------------------------------------------------
    def sample_shape(self, size: int) -> tuple[int, int, int]:
        f = self.autoencoder.cfg.factor
        return (self.autoencoder.cfg.latent_channels, size // f, size // f)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode(image[None].float())[0]

    def encode_mask(self, mask: torch.Tensor) -> torch.Tensor:
        # a latent position is redrawn if any pixel it covers is (max-pooling): the edit covers
        # the whole masked region, as SD's inpainting does
        return F.max_pool2d(mask[None], self.autoencoder.cfg.factor)[0]

    def decode(self, x: torch.Tensor, cond: Any) -> torch.Tensor:
        return self.autoencoder.decode(x.float()).clamp(-1, 1)

    def _check_size(self, size: int) -> None:
        step = self._stride * self.autoencoder.cfg.factor
        if size % step or size < step:
            raise InvalidInputError(
                f"size must be a multiple of {step} between {step} and {MAX_SIZE} (the "
                f"autoencoder's factor {self.autoencoder.cfg.factor} times the UNet's stride; "
                f"this model was trained at {self.cfg.image_size}), not {size}")

    # ---- saving and loading ---------------------------------------------------------------
    def components(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model, "autoencoder": self.autoencoder.net}

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "autoencoder": asdict(self.autoencoder.cfg)}

    @classmethod
    def load(cls, path: Path) -> LatentPipeline:
        path = Path(path)
        cfg, sha256 = open_model_dir(path, cls.family)
        try:
            unet_cfg, dcfg, extra, text = read_sections(cfg, path)
            autoencoder = Autoencoder.from_config(_section(cfg, "autoencoder"), path)
            if unet_cfg.image_channels != autoencoder.cfg.latent_channels:
                raise InvalidInputError(
                    f"unet.image_channels {unet_cfg.image_channels} must be the autoencoder's "
                    f"latent_channels {autoencoder.cfg.latent_channels}")
        except (InvalidInputError, KeyError, TypeError, ValueError) as exc:
            raise config_error(path, "latent model", exc) from None
        model = DiffusionModel(unet_cfg, text.trainable)
        load_components(path, {"model": model, "autoencoder": autoencoder.net}, config=cfg)
        try:
            return cls(model, autoencoder, text, dcfg, name=extra.get("name", path.name),
                       sha256=sha256, extra=extra)
        except InvalidInputError as exc:
            raise config_error(path, "latent model", exc) from None
