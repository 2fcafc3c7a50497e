"""The GAN family's Pipeline: prompt -> frozen MiniLM -> one generator pass -> image.

Each image's noise (z and the conditioning-augmentation draw) comes from its own seed, so an
image is the same at any batch size. The model directory holds two components, "generator"
and "discriminator" (the latter for scoring and further training; drawing needs only the first).

A layout GAN (GauGAN2) also draws from a layout: the user's (`--layout`), or one its layout
stage samples from the prompt and the seed (a third component, "planner": a grounded model's,
carried frozen). The layout used is in the provenance, as the grounded family records it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

import gambar
from gambar.config import dataclass_from_dict
from gambar.errors import InvalidInputError
from gambar.generators.gan.config import GanConfig
from gambar.generators.gan.layout import ObjectMasks, layout_objects
from gambar.generators.gan.model import GanModel
from gambar.generators.gan.options import GanOptions
from gambar.generators.grounded.grounding import PhraseCache
from gambar.generators.grounded.planner import LayoutPlanner, PlannerConfig, plan_layout
from gambar.inputs import Layout
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

    def __init__(self, model: GanModel, text: TextSetup, *, planner: LayoutPlanner | None = None,
                 name: str = "unsaved", sha256: str = "",
                 extra: dict[str, Any] | None = None) -> None:
        if text.frozen is None:
            raise InvalidInputError("a GAN reads the frozen MiniLM text encoder")
        self.model = model.eval()
        self.cfg: GanConfig = model.cfg
        self.text = text
        self.planner = planner.eval() if planner is not None else None
        if self.cfg.layout:
            self.inputs = frozenset({"layout"})
            self.phrases = PhraseCache(text.frozen)
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
        if not self.cfg.layout and options.layout_temperature != 1.0:
            raise InvalidInputError("layout_temperature applies to a layout GAN only; this "
                                    "one draws from the prompt alone")

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
                       truncation: float = 1.0, layouts: Sequence[Layout] | None = None
                       ) -> torch.Tensor:
        """(B, 3, S, S) images in [-1, 1] from sentence vectors (e.g. interpolated ones) and,
        for a layout GAN, one layout each."""
        z, eps = self.noise(seeds, truncation)
        objects = None
        if self.cfg.layout:
            objects = self.objects(layouts or [Layout(())] * len(seeds))
        return self.model.draw(z, sentences, eps, objects)

    def objects(self, layouts: Sequence[Layout]) -> ObjectMasks:
        """The layouts' boxes as masks, with their phrases' vectors."""
        size = self.cfg.image_size
        per_image = [layout_objects(lay, size) for lay in layouts]
        vectors = iter(self.phrases([phrase for objs in per_image for _, phrase in objs]))
        return ObjectMasks.build([[(mask, next(vectors)) for mask, _ in objs]
                                  for objs in per_image], size, self.text.dim)

    def layouts(self, prompts: Sequence[str], seeds: Sequence[int], opts: GanOptions,
                given: Layout | None) -> list[Layout]:
        if given is not None:
            return [given] * len(prompts)
        if self.planner is None:
            raise InvalidInputError("this GAN has no layout stage: give a layout (--layout "
                                    "boxes.json)")
        return [plan_layout(self.planner, self.text.frozen, p, s, opts.layout_temperature)
                for p, s in zip(prompts, seeds, strict=True)]

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
            layouts = (self.layouts(chunk, chunk_seeds, opts, inputs.get("layout"))
                       if self.cfg.layout else None)
            images = self.draw_sentences(self.text.encode(chunk).pooled, chunk_seeds,
                                         opts.truncation, layouts)
            for k, img in enumerate(images):
                prov = {**common_provenance(self, chunk[k], chunk_seeds[k], start + k,
                                            len(prompts)),
                        "text_encoder": self.text.describe(), **opts.to_dict(),
                        **input_provenance(inputs)}
                if layouts is not None:
                    prov.update({"layout": layouts[k].to_json(),
                                 "layout_source": "given" if "layout" in inputs else "sampled"})
                results.append(Generated([to_image(img)], prov))
            if callable(progress):
                progress(b + 1, batches)
        return results

    # ---- saving and loading -----------------------------------------------------------------
    def components(self) -> dict[str, torch.nn.Module]:
        parts = {"generator": self.model.generator, "discriminator": self.model.discriminator}
        if self.planner is not None:
            parts["planner"] = self.planner
        return parts

    def config_dict(self) -> dict[str, Any]:
        planner = {"planner": asdict(self.planner.cfg)} if self.planner is not None else {}
        return {"family": FAMILY, "gambar_version": gambar.__version__,
                "gan": self.cfg.to_dict(), "text_encoder": self.text.to_dict(), **planner,
                **self.extra}

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
            planner = (LayoutPlanner(dataclass_from_dict(PlannerConfig, config["planner"],
                                                         section="planner"))
                       if "planner" in config else None)
        except (InvalidInputError, KeyError, TypeError, ValueError) as exc:
            raise config_error(path, "GAN", exc) from None
        model = GanModel(cfg, text.dim)
        parts: dict[str, torch.nn.Module] = {"generator": model.generator,
                                             "discriminator": model.discriminator}
        if planner is not None:
            parts["planner"] = planner
        load_components(path, parts, config=config)
        extra = {k: config[k] for k in EXTRAS if k in config}
        try:
            return cls(model, text, planner=planner, name=config.get("name", path.name),
                       sha256=sha256, extra=extra)
        except InvalidInputError as exc:
            raise config_error(path, "GAN", exc) from None
