"""A super-resolution stage as a Pipeline: prompt + low-resolution image -> image `factor` times
larger. On its own it upscales a given image (`gambar generate "..." --model sr --image low.png`);
inside a cascade (gambar.generators.diffusion.cascade) it raises the base model's images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gambar.config import dataclass_from_dict
from gambar.errors import InvalidInputError
from gambar.generators.diffusion.config import DiffusionConfig
from gambar.generators.diffusion.pipeline import (
    DiffusionPipeline,
    _from_image,
    _section,
    check_pixel_channels,
    read_sections,
)
from gambar.generators.superres.config import SuperResConfig
from gambar.generators.superres.model import (
    LowResCond,
    SuperResModel,
    aug_timesteps,
    augment,
    upsample,
)
from gambar.generators.superres.options import SuperResOptions
from gambar.model_dir import config_error, load_components, open_model_dir
from gambar.text.base import Encoded
from gambar.text.setup import TextSetup

AUG_SEED_STREAM = 0x5352  # "SR": the augmentation noise never reuses the sampler's draws


class SuperResPipeline(DiffusionPipeline):
    """Text + low-resolution image -> UNet denoiser + stateless sampler -> larger image."""

    family = "superres"
    Options = SuperResOptions
    inputs = frozenset({"image"})

    def __init__(self, model: SuperResModel, text: TextSetup, cfg: DiffusionConfig,
                 superres: SuperResConfig, *, name: str = "unsaved", sha256: str = "",
                 extra: dict[str, Any] | None = None) -> None:
        if text.frozen is None:
            raise InvalidInputError("a super-resolution stage needs the frozen MiniLM encoder")
        self.superres = superres
        super().__init__(model, text, cfg, name=name, sha256=sha256,  # type: ignore[arg-type]
                         extra=extra)
        # The level stored with the stage (its recipe's, or the one measured and set by
        # scripts/build_cascade.py --aug-level) is its default, unless stored defaults say more.
        if "aug_level" not in self.extra.get("defaults", {}):
            self.default_options = replace(self.default_options,  # type: ignore[type-var]
                                           aug_level=superres.aug_level)

    # ---- saving and loading -------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "superres": asdict(self.superres)}

    @classmethod
    def load(cls, path: Path) -> SuperResPipeline:
        path = Path(path)
        cfg, sha256 = open_model_dir(path, cls.family)
        model, text, dcfg, superres, extra = cls.from_config(cfg, path)
        load_components(path, {"model": model}, config=cfg)
        try:
            return cls(model, text, dcfg, superres, name=extra.get("name", path.name),
                       sha256=sha256, extra=extra)
        except InvalidInputError as exc:
            raise config_error(path, "super-resolution model", exc) from None

    @staticmethod
    def from_config(cfg: Mapping[str, Any], path: Path
                    ) -> tuple[SuperResModel, TextSetup, DiffusionConfig, SuperResConfig,
                               dict[str, Any]]:
        """An untrained stage built from a config dict (its own config.json, or a cascade's
        entry for it), checked: a one-line CorruptFileError naming `path`."""
        try:
            unet_cfg, dcfg, extra, text = read_sections(dict(cfg), path)
            superres = dataclass_from_dict(SuperResConfig, _section(cfg, "superres"),
                                           section="superres")
            check_pixel_channels(unet_cfg)
        except (InvalidInputError, KeyError, TypeError, ValueError) as exc:
            raise config_error(path, "super-resolution model", exc) from None
        # the UNet's config is stored with its low-resolution channels; the model adds them
        model = SuperResModel(replace(unet_cfg, extra_channels=0))
        return model, text, dcfg, superres, extra

    # ---- generation ---------------------------------------------------------------------
    def check(self, options: SuperResOptions, inputs: Mapping[str, Any]) -> None:  # type: ignore[override]
        super().check(options, {})
        if options.threshold:  # it would clamp the residual the stage draws, not the image
            raise InvalidInputError("dynamic thresholding applies to a cascade's base model, "
                                    "not to its super-resolution stages")
        if options.size % self.superres.factor:
            raise InvalidInputError(f"size must be a multiple of {self.superres.factor}")
        if inputs and "image" not in inputs:
            raise InvalidInputError("a super-resolution model raises an image: give --image")

    def low_res(self, images: Sequence[Image.Image], size: int) -> torch.Tensor:
        """(B, 3, size, size): each image at size / factor, then upsampled back (bicubic)."""
        factor = self.superres.factor
        low = torch.stack([_from_image(im, size // factor, "RGB") for im in images])
        return upsample(low, factor)

    def conditions(self, prompts: Sequence[str], seeds: Sequence[int], opts: SuperResOptions,  # type: ignore[override]
                   inputs: Mapping[str, Any], uncond_text: Encoded
                   ) -> tuple[Any, Any, list[dict[str, Any]]]:
        if "image" not in inputs:
            raise InvalidInputError("a super-resolution model raises an image: give --image")
        given = inputs["image"]
        images = given if isinstance(given, list) else [given] * len(prompts)
        low_up = self.low_res(images, opts.size)
        levels = torch.full((len(prompts),), float(opts.aug_level))
        t_aug = aug_timesteps(levels, self.schedule)
        # Per-image augmentation noise from the image's own seed: any batch size, same image.
        noise = torch.stack([torch.from_numpy(np.random.default_rng([s, AUG_SEED_STREAM])
                                              .standard_normal(low_up.shape[1:]).astype(np.float32))
                             for s in seeds])
        low = augment(low_up, t_aug, noise, self.schedule)
        cond = LowResCond(self.text.encode(prompts), low, t_aug, low_up)
        uncond = LowResCond(Encoded.cat([uncond_text] * len(prompts)), low, t_aug, low_up)
        return cond, uncond, [{} for _ in prompts]

    def decode(self, x: torch.Tensor, cond: LowResCond) -> torch.Tensor:  # type: ignore[override]
        """The sampled residual on the upsampled image (model.py)."""
        return cond.base + x / self.superres.residual_scale

    def provenance(self, prompt: str, seed: int, index: int, batch: int,  # type: ignore[override]
                   opts: SuperResOptions, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().provenance(prompt, seed, index, batch, opts, inputs),
                "aug_level": opts.aug_level, "factor": self.superres.factor}
