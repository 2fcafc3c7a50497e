"""Pixel-space diffusion as a Pipeline: load/save a model directory, generate with provenance.

This file is where the family's networks meet the samplers (DESIGN.md): the model code never
imports a sampler, the samplers never import a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

import gambar
from gambar.config import dataclass_from_dict
from gambar.errors import InvalidInputError, shown
from gambar.generators.diffusion import cascade
from gambar.generators.diffusion.config import DiffusionConfig
from gambar.generators.diffusion.model import DiffusionModel, build_schedule
from gambar.generators.diffusion.options import MAX_SIZE, DiffusionOptions
from gambar.generators.diffusion.unet import UNetConfig
from gambar.model_dir import config_error, open_model_dir, save_model_dir
from gambar.pipeline import (
    Generated,
    Progress,
    check_request,
    common_provenance,
    input_provenance,
)
from gambar.samplers import Denoiser, as_denoiser, get_sampler
from gambar.samplers.guidance import classifier_free, dynamic_threshold
from gambar.seeding import generators_for, initial_noise
from gambar.tensors import to_image
from gambar.text.base import Encoded
from gambar.text.checks import check_encodable
from gambar.text.setup import TextSetup

__all__ = ["MAX_SIZE", "DiffusionPipeline"]

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _from_image(image: Image.Image, size: int, mode: str) -> torch.Tensor:
    """An input image at size x size as (C, H, W): RGB in [-1, 1], or a mask ("L") in [0, 1].
    A non-square image is centre-cropped to a square first (the model draws squares)."""
    image = ImageOps.fit(image.convert(mode), (size, size), Image.Resampling.LANCZOS)
    x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).float() / 255
    x = x.reshape(size, size, len(mode)).permute(2, 0, 1)
    return x * 2 - 1 if mode == "RGB" else x


def _keep_known(denoise: Denoiser, init: torch.Tensor, mask: torch.Tensor) -> Denoiser:
    """Inpainting by x0 replacement: outside the mask (0) the clean estimate is the init image,
    so every sampler, whose last step returns its x0 estimate, ends exactly on the init pixels
    there and draws the masked part (1) consistently with them."""
    def inpainting(x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        return mask * denoise(x, t, cond) + (1 - mask) * init

    return inpainting


# Optional config.json entries carried through load and save, and their types.
EXTRAS: dict[str, type] = {"name": str, "defaults": dict, "training": dict, "data": dict}


def read_sections(cfg: dict[str, Any], path: Path
                  ) -> tuple[UNetConfig, DiffusionConfig, dict[str, Any], TextSetup]:
    """The UNet, diffusion, extras and text-encoder entries every diffusion-family config.json
    holds, checked (InvalidInputError, KeyError or TypeError: the caller's config_error)."""
    unet_cfg = dataclass_from_dict(UNetConfig, _section(cfg, "unet"), section="unet")
    dcfg = dataclass_from_dict(DiffusionConfig, _section(cfg, "diffusion"), section="diffusion")
    return unet_cfg, dcfg, _extras(cfg), TextSetup.from_dict(_section(cfg, "text_encoder"), path)


def check_pixel_channels(unet: UNetConfig) -> None:
    """A pixel-space UNet draws RGB: checked before its weights are read."""
    if unet.image_channels != 3:
        raise InvalidInputError(
            f"unet.image_channels must be 3 (RGB images), not {unet.image_channels}")


def _section(cfg: dict[str, Any], key: str) -> Any:
    if key not in cfg:
        raise InvalidInputError(f"'{key}' is missing")
    return cfg[key]


def _extras(cfg: dict[str, Any]) -> dict[str, Any]:
    """The optional entries of a config.json, type-checked ("defaults" key by key later)."""
    extra = {k: cfg[k] for k in EXTRAS if k in cfg}
    for key, kind in EXTRAS.items():
        if key in extra and not isinstance(extra[key], kind):
            raise InvalidInputError(
                f"'{key}' must be a {kind.__name__}, not {shown(extra[key])}")
    return extra


class DiffusionPipeline:
    """Text -> encoder -> UNet denoiser + stateless sampler -> image."""

    family = "diffusion"
    Options = DiffusionOptions
    inputs = frozenset({"init", "mask"})

    def __init__(self, model: DiffusionModel, text: TextSetup, cfg: DiffusionConfig,
                 *, name: str = "unsaved", sha256: str = "", extra: dict[str, Any] | None = None
                 ) -> None:
        self.model = model.eval()
        self.text = text
        self.cfg = cfg
        self.schedule = build_schedule(cfg)
        self.name = name
        self.sha256 = sha256
        self.extra = extra or {}
        self.stages: list[Any] = []  # a cascade's super-resolution stages (cascade.py)
        self._stride = model.unet.cfg.stride
        drawn = self.sample_shape(cfg.image_size)[0]
        if model.unet.cfg.image_channels != drawn:
            raise InvalidInputError(f"unet.image_channels is {model.unet.cfg.image_channels} "
                                    f"but this {self.family} model samples {drawn} channels")
        # The samplers' contract, (x_t, t, cond) -> x0 estimate, met here and nowhere else.
        self._denoise = as_denoiser(self.model, self.schedule, cfg.prediction)  # type: ignore[arg-type]
        # The class defaults, at the size the model was trained at, then what config.json sets
        # (scripts/ship_model.py --default KEY=VALUE): checked like any request.
        self.default_options = self.Options(size=cfg.image_size).with_stored(
            self.extra.get("defaults", {}), where="its stored defaults")
        self.check(self.default_options, {})

    # ---- saving and loading -------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "gambar_version": gambar.__version__,
            "unet": asdict(self.model.unet.cfg),
            "diffusion": asdict(self.cfg),
            "text_encoder": self.text.to_dict(),
            "schedule": self.schedule.to_json(),
            **self.extra,
            **({cascade.CASCADE: cascade.stage_entries(self.stages)} if self.stages else {}),
        }

    def save(self, path: Path, *, dtype: torch.dtype = torch.float32) -> None:
        """Write config.json + model.safetensors (+ the tokenizer of a trainable encoder)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.text.save_files(path)
        components = {**self.components(),
                      **cascade.stage_components(self.cfg.image_size, self.stages)}
        self.sha256 = save_model_dir(path, components, self.config_dict(), dtype=dtype)
        self.name = self.extra.get("name", path.name)

    def components(self) -> dict[str, torch.nn.Module]:
        """The model directory's weight files, by component name."""
        return {"model": self.model}

    @classmethod
    def load(cls, path: Path) -> DiffusionPipeline:
        """Read a model directory written by `save`. Its files are checked against SHA256SUMS
        and every config value for type and range: damage is a one-line CorruptFileError naming
        the file (and the key)."""
        path = Path(path)
        cfg, sha256 = open_model_dir(path, cls.family)
        try:
            unet_cfg, dcfg, extra, text = read_sections(cfg, path)
            check_pixel_channels(unet_cfg)
        except (InvalidInputError, KeyError, TypeError) as exc:
            raise config_error(path, "diffusion model", exc) from None
        model = DiffusionModel(unet_cfg, text.trainable)
        stages = cascade.load_with_stages(path, cfg, dcfg.image_size, {"model": model})
        try:
            pipe = cls(model, text, dcfg, name=extra.get("name", path.name), sha256=sha256,
                       extra=extra)
            if cfg.get("schedule", pipe.schedule.to_json()) != pipe.schedule.to_json():
                raise InvalidInputError("'schedule' disagrees with the 'diffusion' settings")
            pipe.stages = stages
        except InvalidInputError as exc:
            raise config_error(path, "diffusion model", exc) from None
        return pipe

    def check(self, options: DiffusionOptions, inputs: Mapping[str, Any]) -> None:
        """What the Options cannot know: the UNet's stride, the schedule's length, img2img's
        arithmetic, and a mask's init image."""
        self._check_size(options.size)
        self.schedule.timesteps(options.steps)  # at most T steps
        cascade.check(self, options, inputs)
        # A strength that rounds to no steps is allowed: it returns the init image (generate).
        if "mask" in inputs:
            if "init" not in inputs:
                raise InvalidInputError("a mask needs an init image (the pixels it keeps)")
            mask, init = inputs["mask"], inputs["init"]
            if mask.size != init.size:
                raise InvalidInputError(
                    f"the mask is {mask.width}x{mask.height} but the init image "
                    f"{init.width}x{init.height}; give them one size")

    def _check_size(self, size: int) -> None:
        """The UNet's downsampling needs a multiple of its stride (the Options bound the rest)."""
        if size % self._stride or size < self._stride:
            raise InvalidInputError(
                f"size must be a multiple of {self._stride} between {self._stride} and {MAX_SIZE} "
                f"(this model was trained at {self.cfg.image_size}), not {size}")

    # ---- generation ---------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], *, seeds: Sequence[int],
                 options: DiffusionOptions | None = None,
                 inputs: Mapping[str, Any] | None = None, batch_size: int = 8,
                 progress: bool | Progress = True, **changes: Any) -> list[Generated]:
        """Draw one image per (prompt, seed). Image k depends only on its own seed.

        `inputs`: "init" (an image to start from, redrawn by `strength`: img2img / SDEdit,
        Meng et al. 2022) and "mask" (with init, and its size: white is drawn anew, black
        kept). A non-square input is centre-cropped to a square. Strength 0 (or one that rounds
        to no steps) returns the init image as the model reads it; strength 1 ignores it (the
        image drawn from the prompt alone), except where a mask keeps it."""
        prompts = list(prompts)
        opts, inputs = check_request(self, prompts, seeds, options, changes, inputs, batch_size)
        check_encodable(opts.negative_prompt, "the negative prompt")
        if cascade.plan(self, opts.size) is not None:
            return cascade.draw(self, prompts, list(seeds), opts, inputs, batch_size, progress)
        return self.draw(prompts, list(seeds), opts, inputs, batch_size, progress)

    @torch.inference_mode()
    def draw(self, prompts: list[str], seeds: list[int], opts: DiffusionOptions,
             inputs: Mapping[str, Any], batch_size: int, progress: bool | Progress
             ) -> list[Generated]:
        """generate() once its request is checked. An input given as a list holds one value per
        prompt (a cascade stage's low-resolution images); `conditions` sees its chunk's share."""
        timesteps = self.schedule.timesteps(opts.steps)
        init = mask = None
        if "init" in inputs:
            init = self.encode(_from_image(inputs["init"], opts.size, "RGB"))
            # Redraw the last `strength` share of the steps (diffusers' img2img rule).
            timesteps = timesteps[opts.steps - int(opts.steps * opts.strength):]
        if "mask" in inputs:
            mask = self.encode_mask(_from_image(inputs["mask"], opts.size, "L"))
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=opts.precision == "bf16")
        sample = get_sampler(opts.sampler)
        sampler_kwargs = {"eta": opts.eta} if opts.sampler == "ddim" else {}
        total = len(timesteps) * -(-len(prompts) // batch_size)
        bar = tqdm(total=total, desc="sampling", unit="step", disable=progress is not True,
                   leave=False)
        done = 0

        def on_step(i: int, n: int, x: torch.Tensor) -> None:
            nonlocal done
            done += 1
            bar.update(1)
            if callable(progress):
                progress(done, total)

        results: list[Generated] = []
        uncond_text = self.text.encode([opts.negative_prompt], self.model)
        try:
            with autocast:
                for start in range(0, len(prompts), batch_size):
                    chunk = prompts[start:start + batch_size]
                    chunk_seeds = seeds[start:start + batch_size]
                    share = {k: v[start:start + batch_size] if isinstance(v, list) else v
                             for k, v in inputs.items()}
                    cond, uncond, extras = self.conditions(chunk, chunk_seeds, opts, share,
                                                           uncond_text)
                    gens = generators_for(chunk_seeds)
                    x = initial_noise(self.sample_shape(opts.size), gens)
                    # The init image, noised to where sampling starts. Redrawing every step
                    # starts from the pure noise text-to-image starts from (trailing spacing
                    # treats it as x_T; the init's weight there, alpha_T, is ~0 but not 0), so
                    # strength 1 ignores the init image exactly.
                    if init is not None and 0 < len(timesteps) < opts.steps:
                        x = self.schedule.q_sample(init.expand_as(x), timesteps[:1].expand(len(x)),
                                                   x)
                    if opts.guidance == 1.0:
                        denoise, c = self._denoise, cond
                    else:
                        denoise = classifier_free(self._denoise, opts.guidance)
                        c = (cond, uncond)
                    if opts.threshold:
                        denoise = dynamic_threshold(denoise, opts.threshold)
                    if mask is not None:
                        denoise = _keep_known(denoise, init, mask)
                    if init is not None and not len(timesteps):
                        x = init.expand_as(x)  # no step redrawn: the init image as read
                    else:
                        x = sample(denoise, x, c, self.schedule, timesteps, generators=gens,
                                   callback=on_step, **sampler_kwargs)
                    x = self.decode(x, cond)
                    for k, img in enumerate(x):
                        own = {n: v[start + k] if isinstance(v, list) else v
                               for n, v in inputs.items()}
                        prov = self.provenance(chunk[k], chunk_seeds[k], start + k, len(prompts),
                                               opts, own)
                        prov.update(extras[k])
                        results.append(Generated([to_image(img)], prov))
        finally:
            bar.close()
        return results

    # ---- the space the sampler works in (hooks: pixels here; latents in a latent model) ----
    def sample_shape(self, size: int) -> tuple[int, int, int]:
        """The shape of one sample the sampler draws for a size x size image."""
        return (3, size, size)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """An init image (3, size, size) in [-1, 1] in the sampler's space."""
        return image

    def encode_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """A mask (1, size, size) in [0, 1] at the sampler's resolution."""
        return mask

    def decode(self, x: torch.Tensor, cond: Any) -> torch.Tensor:
        """The sampler's result as images in [-1, 1] (a super-resolution stage adds its
        upsampled input, a latent model decodes its latents)."""
        return x

    def conditions(self, prompts: Sequence[str], seeds: Sequence[int], opts: DiffusionOptions,
                   inputs: Mapping[str, Any], uncond_text: Encoded
                   ) -> tuple[Any, Any, list[dict[str, Any]]]:
        """The conditional and unconditional conditioning of one chunk of prompts, and what
        each image's provenance adds about them (a subclass's hook: layouts, for one)."""
        cond = self.text.encode(prompts, self.model)
        return cond, Encoded.cat([uncond_text] * len(prompts)), [{} for _ in prompts]

    @staticmethod
    def sampler_options(opts: DiffusionOptions) -> dict[str, Any]:
        """The options recorded under "sampler_options": DDIM's eta, and the dynamic threshold
        when one is set (absent when off, so older images' provenance reads the same)."""
        return {**({"eta": opts.eta} if opts.sampler == "ddim" else {}),
                **({"threshold": opts.threshold} if opts.threshold else {})}

    def provenance(self, prompt: str, seed: int, index: int, batch: int,
                   opts: DiffusionOptions, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Everything needed to reproduce one image (DESIGN.md "Provenance")."""
        prov = {
            **common_provenance(self, prompt, seed, index, batch),
            "negative_prompt": opts.negative_prompt, "text_encoder": self.text.describe(),
            "sampler": opts.sampler, "steps": opts.steps, "guidance": opts.guidance,
            "sampler_options": self.sampler_options(opts),
            "size": opts.size, "precision": opts.precision,
            "dtype": str(PRECISIONS[opts.precision]).removeprefix("torch."),
            **input_provenance(inputs),
        }
        if "init" in inputs:
            prov["strength"] = opts.strength
        return prov
