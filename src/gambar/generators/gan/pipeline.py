"""The GAN family's Pipeline: prompt -> frozen MiniLM -> one generator pass -> image.

Each image's noise (z and the conditioning-augmentation draw) comes from its own seed, so an
image is the same at any batch size. The model directory holds two components, "generator"
and "discriminator" (the latter for scoring and further training; drawing needs only the first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

import gambar
from gambar.errors import InvalidInputError
from gambar.generators.gan.config import GanConfig
from gambar.generators.gan.model import GanModel
from gambar.generators.gan.options import GanOptions
from gambar.model_dir import config_error, load_components, open_model_dir, save_model_dir
from gambar.pipeline import Generated, Progress, check_request, common_provenance, input_provenance
from gambar.seeding import generators_for
from gambar.tensors import to_image
from gambar.text.setup import TextSetup

FAMILY = "gan"
EXTRAS = ("name", "defaults", "training", "data")  # config.json entries kept through a re-save


class GanPipeline:
    family = FAMILY
    Options = GanOptions
    inputs: frozenset[str] = frozenset()

    def __init__(self, model: GanModel, text: TextSetup, *, name: str = "unsaved",
                 sha256: str = "", extra: dict[str, Any] | None = None) -> None:
        self.model = model.eval()
        self.cfg: GanConfig = model.cfg
        self.text = text
        self.name = name
        self.sha256 = sha256
        self.extra = dict(extra or {})
        self.default_options = GanOptions(size=self.cfg.image_size).with_stored(
            self.extra.get("defaults", {}), where="its stored defaults")
        self.check(self.default_options, {})

    def check(self, options: GanOptions, inputs: Mapping[str, Any]) -> None:
        if options.size != self.cfg.image_size:  # one generator pass draws one size
            raise InvalidInputError(
                f"size must be {self.cfg.image_size} for this model (a GAN draws the size it "
                f"was trained at), not {options.size}")

    # ---- drawing ----------------------------------------------------------------------------
    def noise(self, seeds: Sequence[int], truncation: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, conditioning noise) of each seed, scaled by `truncation`."""
        z, eps = [], []
        for g in generators_for(seeds):
            z.append(torch.randn(self.cfg.z_dim, generator=g))
            eps.append(torch.randn(self.cfg.cond_dim, generator=g))
        return torch.stack(z) * truncation, torch.stack(eps) * truncation

    @torch.inference_mode()
    def draw_sentences(self, sentences: torch.Tensor, seeds: Sequence[int],
                       truncation: float = 1.0) -> torch.Tensor:
        """(B, 3, S, S) images in [-1, 1] from sentence vectors (e.g. interpolated ones)."""
        z, eps = self.noise(seeds, truncation)
        return self.model.draw(z, sentences, eps)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], *, seeds: Sequence[int],
                 options: GanOptions | None = None, inputs: Mapping[str, Any] | None = None,
                 batch_size: int = 8, progress: bool | Progress = True,
                 **changes: Any) -> list[Generated]:
        prompts = list(prompts)
        opts, inputs = check_request(self, prompts, seeds, options, changes, inputs, batch_size)
        batches = -(-len(prompts) // batch_size)
        results: list[Generated] = []
        for b, start in enumerate(range(0, len(prompts), batch_size)):
            chunk, chunk_seeds = prompts[start:start + batch_size], seeds[start:start + batch_size]
            images = self.draw_sentences(self.text.encode(chunk).pooled, chunk_seeds,
                                         opts.truncation)
            for k, img in enumerate(images):
                prov = {**common_provenance(self, chunk[k], chunk_seeds[k], start + k,
                                            len(prompts)),
                        "text_encoder": self.text.describe(), **opts.to_dict(),
                        **input_provenance(inputs)}
                results.append(Generated([to_image(img)], prov))
            if callable(progress):
                progress(b + 1, batches)
        return results

    # ---- saving and loading -----------------------------------------------------------------
    def components(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.model.generator, "discriminator": self.model.discriminator}

    def config_dict(self) -> dict[str, Any]:
        return {"family": FAMILY, "gambar_version": gambar.__version__,
                "gan": self.cfg.to_dict(), "text_encoder": self.text.to_dict(), **self.extra}

    def save(self, path: Path, *, dtype: torch.dtype = torch.float32) -> None:
        self.sha256 = save_model_dir(Path(path), self.components(), self.config_dict(),
                                     dtype=dtype)
        self.name = self.extra.get("name", Path(path).name)

    @classmethod
    def load(cls, path: Path) -> GanPipeline:
        path = Path(path)
        config, sha256 = open_model_dir(path, FAMILY)
        try:
            cfg = GanConfig.from_dict(config["gan"])
            text = TextSetup.from_dict(config["text_encoder"], path)
        except (InvalidInputError, KeyError, TypeError) as exc:
            raise config_error(path, "GAN", exc) from None
        model = GanModel(cfg, text.dim)
        load_components(path, {"generator": model.generator,
                               "discriminator": model.discriminator}, config=config)
        extra = {k: config[k] for k in EXTRAS if k in config}
        try:
            return cls(model, text, name=config.get("name", path.name), sha256=sha256,
                       extra=extra)
        except InvalidInputError as exc:
            raise config_error(path, "GAN", exc) from None
