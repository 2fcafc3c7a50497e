"""The toy family's Pipeline: caption + optional layout + per-image noise -> one forward pass.

Written against the same contract as diffusion's (gambar.pipeline): Options, inputs, a model
directory of two components (generator and discriminator), provenance with input digests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

import gambar
from gambar.errors import InvalidInputError
from gambar.model_dir import config_error, load_components, open_model_dir, save_model_dir
from gambar.pipeline import (
    Generated,
    Progress,
    check_request,
    common_provenance,
    input_provenance,
)
from gambar.seeding import generators_for
from gambar.tensors import to_image
from toy_family.model import ToyConfig, ToyGAN, layout_mask
from toy_family.options import ToyOptions


class ToyPipeline:
    family = "toy"
    Options = ToyOptions
    inputs = frozenset({"layout"})

    def __init__(self, model: ToyGAN, cfg: ToyConfig, *, name: str = "unsaved",
                 sha256: str = "", extra: dict[str, Any] | None = None) -> None:
        self.model = model.eval()
        self.cfg = cfg
        self.name = name
        self.sha256 = sha256
        self.extra = dict(extra or {})
        self.default_options = ToyOptions(size=cfg.size).with_stored(
            self.extra.get("defaults", {}), where="its stored defaults")
        self.check(self.default_options, {})

    def check(self, options: ToyOptions, inputs: Mapping[str, Any]) -> None:
        if options.size != self.cfg.size:  # one forward pass draws the trained size only
            raise InvalidInputError(f"size must be {self.cfg.size} for this model (the size it "
                                    f"was trained at), not {options.size}")

    @classmethod
    def from_training(cls, model: ToyGAN, cfg: ToyConfig, *, name: str,
                      extra: dict[str, Any]) -> ToyPipeline:
        return cls(model, cfg, name=name, extra=extra)

    def components(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.model.generator, "discriminator": self.model.discriminator}

    def save(self, path: Path, *, dtype: torch.dtype = torch.float32) -> None:
        config = {"family": self.family, "gambar_version": gambar.__version__,
                  "toy": self.cfg.to_dict(), **self.extra}
        self.sha256 = save_model_dir(path, self.components(), config, dtype=dtype)
        self.name = self.extra.get("name", Path(path).name)

    @classmethod
    def load(cls, path: Path) -> ToyPipeline:
        path = Path(path)
        config, sha256 = open_model_dir(path, cls.family)
        try:
            cfg = ToyConfig.from_dict(config["toy"])
        except (InvalidInputError, KeyError, TypeError) as exc:
            raise config_error(path, "toy model", exc) from None
        pipe = cls(ToyGAN(cfg), cfg, name=config.get("name", path.name), sha256=sha256,
                   extra={k: config[k] for k in ("name", "defaults", "training", "data")
                          if k in config})
        load_components(path, pipe.components())
        return pipe

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], *, seeds: Sequence[int],
                 options: ToyOptions | None = None, inputs: Mapping[str, Any] | None = None,
                 batch_size: int = 8, progress: bool | Progress = True,
                 **changes: Any) -> list[Generated]:
        prompts = list(prompts)
        opts, inputs = check_request(self, prompts, seeds, options, changes, inputs, batch_size)
        size = opts.size
        mask = (layout_mask(inputs["layout"], size) if "layout" in inputs
                else torch.zeros(1, size, size))
        batches = -(-len(prompts) // batch_size)
        results: list[Generated] = []
        for b, start in enumerate(range(0, len(prompts), batch_size)):
            chunk, chunk_seeds = prompts[start:start + batch_size], seeds[start:start + batch_size]
            # Each image's noise from its own seed: the same image at any batch size.
            z = torch.stack([torch.randn(self.cfg.z_dim, generator=g)
                             for g in generators_for(chunk_seeds)]) * opts.truncation
            images = self.model.draw(z, chunk, mask.expand(len(chunk), -1, -1, -1))
            for k, img in enumerate(images):
                prov = {**common_provenance(self, chunk[k], chunk_seeds[k], start + k,
                                            len(prompts)),
                        **opts.to_dict(), **input_provenance(inputs)}
                results.append(Generated([to_image(img)], prov))
            if callable(progress):
                progress(b + 1, batches)
        return results
