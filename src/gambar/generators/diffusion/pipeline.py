"""Pixel-space diffusion as a Pipeline: load/save a model directory, generate with provenance."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

import gambar
from gambar.config import dataclass_from_dict
from gambar.errors import InvalidInputError, shown
from gambar.generators.diffusion.config import DiffusionConfig
from gambar.generators.diffusion.model import DiffusionModel, build_schedule
from gambar.generators.diffusion.unet import UNetConfig
from gambar.model_dir import (
    config_error,
    load_weights,
    read_config,
    save_model_dir,
    verify_model_dir,
)
from gambar.pipeline import Generated, Progress
from gambar.samplers import as_denoiser, get_sampler
from gambar.samplers.guidance import classifier_free
from gambar.seeding import check_seed, generators_for, initial_noise
from gambar.text.base import Encoded
from gambar.text.checks import check_encodable, check_prompt
from gambar.text.setup import TextSetup

MAX_PROMPT_CHARS = 500
MAX_SIZE = 256  # the largest side sampled: a CPU draws 256 px at 16x the cost of 64 px
MAX_STEPS = 1000
MAX_GUIDANCE = 50.0
# Measured on the default model (benchmarks/sampler_settings.py, 40 prompts): DPM-Solver++(2M)
# at 20 steps scores 0.30-0.31 like DDIM at 100 steps (0.31) in a fifth of the time; 10 steps
# drop to 0.23. Guidance 2 scored 0.31, 4 scored 0.30, 6 scored 0.24, 1 (off) scored 0.11.
DEFAULTS: dict[str, Any] = {"sampler": "dpmpp", "steps": 20, "guidance": 2.0, "precision": "fp32"}
# Network arithmetic: "bf16" runs convolutions and matmuls under bfloat16 autocast (the sampler's
# own arithmetic stays fp32). Faster on CPUs with bf16 units; pixels differ by a few levels.
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _to_image(x: torch.Tensor) -> Image.Image:
    """(C, H, W) in [-1, 1] -> 8-bit RGB."""
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr, "RGB")


@dataclass(frozen=True)
class SamplingDefaults:
    """Keys and types of a pipeline's sampling defaults: DEFAULTS, the size it was trained at,
    and what config.json's "defaults" sets (scripts/ship_model.py --default KEY=VALUE). Their
    ranges are generate()'s."""

    sampler: str
    steps: int
    guidance: float
    precision: str
    size: int


# Optional config.json entries carried through load and save, and their types.
EXTRAS: dict[str, type] = {"name": str, "defaults": dict, "training": dict, "data": dict}


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
        self.defaults = {**DEFAULTS, "size": cfg.image_size, **self.extra.get("defaults", {})}
        # The samplers' contract, (x_t, t, cond) -> x0 estimate, met here and nowhere else.
        self._denoise = as_denoiser(self.model, self.schedule, cfg.prediction)  # type: ignore[arg-type]
        self._stride = model.unet.cfg.stride

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
        }

    def save(self, path: Path, *, dtype: torch.dtype = torch.float32) -> None:
        """Write config.json + model.safetensors (+ the tokenizer of a trainable encoder)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.text.save_files(path)
        self.sha256 = save_model_dir(path, self.model, self.config_dict(), dtype=dtype)
        self.name = self.extra.get("name", path.name)

    @classmethod
    def load(cls, path: Path) -> DiffusionPipeline:
        """Read a model directory written by `save`. Its files are checked against SHA256SUMS
        and every config value for type and range: damage is a one-line CorruptFileError naming
        the file (and the key)."""
        path = Path(path)
        sha256 = verify_model_dir(path)
        cfg = read_config(path)
        try:
            unet_cfg = dataclass_from_dict(UNetConfig, _section(cfg, "unet"), section="unet")
            dcfg = dataclass_from_dict(DiffusionConfig, _section(cfg, "diffusion"),
                                       section="diffusion")
            extra = _extras(cfg)
            text = TextSetup.from_dict(_section(cfg, "text_encoder"), path)
        except (InvalidInputError, KeyError, TypeError) as exc:
            raise config_error(path, "diffusion model", exc) from None
        model = DiffusionModel(unet_cfg, text.trainable)
        load_weights(path, model)
        pipe = cls(model, text, dcfg, name=extra.get("name", path.name), sha256=sha256,
                   extra=extra)
        try:
            if cfg.get("schedule", pipe.schedule.to_json()) != pipe.schedule.to_json():
                raise InvalidInputError("'schedule' disagrees with the 'diffusion' settings")
            pipe._check_defaults()
        except InvalidInputError as exc:
            raise config_error(path, "diffusion model", exc) from None
        return pipe

    def _check_defaults(self) -> None:
        """The sampling defaults (built-in, then stored) must have the right types and pass
        generate()'s own checks: one set of bounds for both."""
        d = dataclass_from_dict(SamplingDefaults, self.defaults, section="defaults")
        self._check([], [], d.steps, d.guidance, d.sampler, d.size)
        if d.precision not in PRECISIONS:
            raise InvalidInputError(
                f"precision must be one of {', '.join(PRECISIONS)}, not {d.precision!r}")

    # ---- generation ---------------------------------------------------------------------
    def _check(self, prompts: Sequence[str], seeds: Sequence[int], steps: int, guidance: float,
               sampler: str, size: int) -> None:
        if len(prompts) != len(seeds):
            raise InvalidInputError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        for p in prompts:
            check_prompt(p)
            if len(p) > MAX_PROMPT_CHARS:
                raise InvalidInputError(
                    f"the prompt is {len(p)} characters; the limit is {MAX_PROMPT_CHARS}")
        for s in seeds:
            check_seed(s)
        if not 1 <= steps <= MAX_STEPS:
            raise InvalidInputError(f"steps must be between 1 and {MAX_STEPS}, not {steps}")
        if not 0 <= guidance <= MAX_GUIDANCE:
            raise InvalidInputError(
                f"guidance must be between 0 and {MAX_GUIDANCE}, not {guidance}")
        get_sampler(sampler)  # raises a one-line error naming the valid samplers
        if size % self._stride or not self._stride <= size <= MAX_SIZE:
            raise InvalidInputError(
                f"size must be a multiple of {self._stride} between {self._stride} and {MAX_SIZE} "
                f"(this model was trained at {self.cfg.image_size}), not {size}")

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], *, seeds: Sequence[int],
                 negative_prompt: str = "", steps: int | None = None,
                 guidance: float | None = None, sampler: str | None = None,
                 size: int | None = None, eta: float = 0.0, batch_size: int = 8,
                 precision: str | None = None,
                 progress: bool | Progress = True) -> list[Generated]:
        """Draw one image per (prompt, seed). Image k depends only on its own seed."""
        prompts = list(prompts)
        steps = int(steps if steps is not None else self.defaults["steps"])
        guidance = float(guidance if guidance is not None else self.defaults["guidance"])
        # `is None`, not `or`: an explicit 0 or "" is the user's value, to be checked, not dropped
        sampler = sampler if sampler is not None else self.defaults["sampler"]
        size = int(size if size is not None else self.defaults["size"])
        precision = precision if precision is not None else self.defaults["precision"]
        self._check(prompts, seeds, steps, guidance, sampler, size)
        if precision not in PRECISIONS:
            raise InvalidInputError(
                f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
        check_encodable(negative_prompt, "the negative prompt")
        if len(negative_prompt) > MAX_PROMPT_CHARS:
            raise InvalidInputError(f"the negative prompt is over {MAX_PROMPT_CHARS} characters")
        if batch_size < 1:
            raise InvalidInputError(f"batch size must be at least 1, not {batch_size}")
        if not 0.0 <= eta <= 1.0:  # DDIM's eta: 0 deterministic, 1 ancestral (Song et al. 2021)
            raise InvalidInputError(f"eta must be between 0 and 1, not {eta}")
        sample = get_sampler(sampler)
        options = {"eta": eta} if sampler == "ddim" else {}
        total = steps * -(-len(prompts) // batch_size)
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
        uncond_text = self.text.encode([negative_prompt], self.model)
        try:
            with autocast:
                for start in range(0, len(prompts), batch_size):
                    chunk = prompts[start:start + batch_size]
                    chunk_seeds = seeds[start:start + batch_size]
                    cond = self.text.encode(chunk, self.model)
                    uncond = Encoded.cat([uncond_text] * len(chunk))
                    gens = generators_for(chunk_seeds)
                    x = initial_noise((3, size, size), gens)
                    if guidance == 1.0:
                        denoise, c = self._denoise, cond
                    else:
                        denoise, c = classifier_free(self._denoise, guidance), (cond, uncond)
                    x = sample(denoise, x, c, self.schedule, self.schedule.timesteps(steps),
                               generators=gens, callback=on_step, **options)
                    for k, img in enumerate(x):
                        prov = self.provenance(
                            chunk[k], negative_prompt, chunk_seeds[k], start + k, len(prompts),
                            sampler, steps, guidance, options, size, precision)
                        results.append(Generated(_to_image(img), prov))
        finally:
            bar.close()
        return results

    def provenance(self, prompt: str, negative: str, seed: int, index: int, batch: int,
                   sampler: str, steps: int, guidance: float, options: dict[str, Any],
                   size: int, precision: str = "fp32") -> dict[str, Any]:
        """Everything needed to reproduce one image (DESIGN.md "Provenance")."""
        return {
            "prompt": prompt, "negative_prompt": negative, "seed": int(seed),
            "index_in_batch": index, "batch_size": batch, "family": self.family,
            "model_name": self.name, "model_sha256": self.sha256,
            "text_encoder": self.text.describe(), "sampler": sampler, "steps": steps,
            "guidance": guidance, "sampler_options": options, "size": size,
            "precision": precision, "dtype": str(PRECISIONS[precision]).removeprefix("torch."),
            "gambar_version": gambar.__version__,
            "torch_version": torch.__version__, "machine": platform.machine(),
        }
