"""The AUTOMATIC1111 dialect: POST /sdapi/v1/txt2img and the read-only endpoints clients call
first, so that `webuiapi.WebUIApi(host="127.0.0.1", port=8000)` works unchanged (img2img, which
shares this file's helpers: compat_a1111_img2img.py).

Options a client sends with their "off" values (enable_hr false, denoising_strength without
hires fix, restore_faces false, empty styles and scripts ...) are accepted; the same options
switched on would change the image in ways gambar cannot, so they are answered 422.
Omitted options take the model's own defaults (its native size, steps, guidance, sampler).

A1111's sampling fields map onto gambar options of the same meaning (OPTION_FIELDS, and
sampler_name/sampler_index -> sampler, eta -> eta), each only when the chosen model's family has
that option. For a family without it (a GAN has no steps, guidance or sampler) the field is
accepted when off or at the value A1111 clients send when their user chose nothing
(CLIENT_DEFAULTS: webuiapi always sends steps 20, cfg_scale 7, sampler "Euler a", eta 1);
refusing those would make such clients unusable with that model, and they ask for nothing in
particular. Any other value is answered 422 naming the field and the missing option.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

import gambar
from gambar.errors import InvalidInputError, shown
from gambar.pipeline import MAX_PROMPT_CHARS, Pipeline
from gambar.server.auth import client_key
from gambar.server.compat import (
    drawing_size,
    is_off,
    native_size,
    read_pngs,
    reject_unknown,
    require,
    run_to_end,
)
from gambar.server.jobs import MAX_IMAGES, Job, State
from gambar.server.routes import bearer
from gambar.server.service import JobService
from gambar.server.sizing import output_size, resize_info, square_side

router = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111-compatible"],
                   dependencies=[Depends(bearer)])

# A1111 sampler name -> (gambar sampler, eta when the request gives none, aliases).
# "Euler a" with noise eta is the same update as DDIM with that eta: both draw x_{t-1} from
# the DDPM posterior scaled by eta (k-diffusion's sigma_up equals DDIM's sigma_t, Song et al.
# 2021 eq. 16), so it maps to gambar's ddim with A1111's eta_ancestral default of 1.
SAMPLERS: dict[str, tuple[str, float | None, tuple[str, ...]]] = {
    "DPM++ 2M": ("dpmpp", None, ("k_dpmpp_2m", "dpmpp_2m", "dpmpp")),
    "Euler a": ("ddim", 1.0, ("k_euler_a", "k_euler_ancestral", "euler_a", "euler_ancestral")),
    "Euler": ("euler", None, ("k_euler", "euler")),
    "DDIM": ("ddim", 0.0, ("ddim",)),
    "DDPM": ("ddpm", None, ("ddpm",)),
}
_LOOKUP = {alias.lower(): name for name, (_, _, aliases) in SAMPLERS.items()
           for alias in (name, *aliases)}
# A1111 field -> the gambar option it sets (sampler_name and eta: see _sampler).
OPTION_FIELDS = {"steps": "steps", "cfg_scale": "guidance", "negative_prompt": "negative_prompt"}
# What A1111 clients send when their user chose nothing (webuiapi's defaults, which are A1111's).
CLIENT_DEFAULTS: dict[str, Any] = {"steps": 20, "cfg_scale": 7.0, "sampler_name": "Euler a",
                                   "sampler_index": "Euler a", "eta": 1.0}
# Options that do nothing unless another option is on (hires fix, subseeds, churn), or that
# concern only A1111's own files and UI: accepted with any value.
INERT = ("hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y",
         "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler", "hr_prompt",
         "hr_negative_prompt", "hr_additional_modules", "denoising_strength",
         "firstphase_width", "firstphase_height", "subseed", "s_tmin", "s_tmax",
         "override_settings_restore_afterwards", "do_not_save_samples", "do_not_save_grid",
         "save_images", "disable_extra_networks", "comments", "infotext",
         "force_task_id", "firstpass_image", "seed_enable_extras")


class Txt2ImgRequest(BaseModel):
    """A1111's txt2img body. Unlisted fields are accepted only when off."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    # Sampling fields: bounds are the model's own (its Options check them).
    negative_prompt: str = ""
    seed: int = Field(-1, ge=-1, description="-1: random")
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = Field(None, ge=1)
    height: int | None = Field(None, ge=1)
    batch_size: int = Field(1, ge=1, le=MAX_IMAGES)
    n_iter: int = Field(1, ge=1, le=MAX_IMAGES)
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    eta: float | None = None
    enable_hr: bool = False
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    restore_faces: bool | None = None
    tiling: bool | None = None
    s_churn: float = 0.0
    s_noise: float = 1.0
    styles: list[str] = []
    override_settings: dict[str, Any] = {}
    script_name: str | None = None
    script_args: list[Any] = []
    alwayson_scripts: dict[str, Any] = {}
    send_images: bool = True
    refiner_checkpoint: str | None = None


def _absent(field: str, value: Any, family: str, option: str) -> None:
    """Accept a field whose option the family lacks only when it asks for nothing."""
    default = CLIENT_DEFAULTS.get(field)
    if is_off(value) or value == default:
        return
    alternative = "" if default is None else f" (or send A1111's default {default!r})"
    raise InvalidInputError(f"{field}={shown(value)} cannot be honoured: a {family} model has no "
                            f"{option!r} option; leave it out{alternative}")


def _sampler_choices(pipe: Pipeline) -> tuple[str, ...]:
    """The gambar samplers a model offers (its `sampler` option's choices); none without one."""
    spec = next((s for s in pipe.Options.specs() if s.name == "sampler"), None)
    return tuple(spec.choices or ()) if spec else ()


def _a1111_names(choices: tuple[str, ...]) -> list[str]:
    """A1111 names for these gambar samplers; a sampler A1111 has no name for keeps its own."""
    named = [a for a, (g, _, _) in SAMPLERS.items() if g in choices]
    return named + [c for c in choices if c not in {g for g, _, _ in SAMPLERS.values()}]


def _sampler(body: Txt2ImgRequest, default: str, choices: tuple[str, ...]
             ) -> tuple[str, str, float | None]:
    """(A1111 name, gambar sampler, eta) for the request."""
    asked = body.sampler_name or body.sampler_index
    if not asked:
        reverse = {g: a for a, (g, _, _) in SAMPLERS.items() if a != "Euler a"}
        name = reverse.get(default, default)
    elif asked in choices:  # a gambar name A1111 has no name for
        name = asked
    else:
        if "karras" in asked.lower() or "exponential" in asked.lower():
            raise InvalidInputError(f"sampler {shown(asked)} cannot be honoured: gambar's "
                                    "samplers use their own timestep spacing; drop the schedule "
                                    "suffix")
        found = _LOOKUP.get(asked.lower())
        if found is None:
            raise InvalidInputError(f"unknown sampler {shown(asked)}; choose one of: "
                                    f"{', '.join(_a1111_names(choices))}")
        name = found
    sampler, eta_default, _ = SAMPLERS.get(name, (name, None, ()))
    eta = None
    if sampler == "ddim":
        eta = body.eta if body.eta is not None else eta_default
    elif sampler == "ddpm":
        require("eta", body.eta, (1.0,), "gambar's DDPM is ancestral (eta 1)")
    # Other samplers ignore eta, as in A1111 (webuiapi always sends eta 1).
    return name, sampler, eta


def sampling_changes(body: Txt2ImgRequest, pipe: Pipeline
                     ) -> tuple[str | None, dict[str, Any]]:
    """(A1111 sampler name or None, gambar option changes) for the request and this model."""
    names = set(pipe.Options.names())
    changes: dict[str, Any] = {}
    for field, option in OPTION_FIELDS.items():
        value = getattr(body, field)
        if option in names:
            changes[option] = value
        else:
            _absent(field, value, pipe.family, option)
    if "sampler" not in names:
        for field in ("sampler_name", "sampler_index", "eta"):
            _absent(field, getattr(body, field), pipe.family, field.split("_")[0])
        return None, changes
    default = pipe.default_options.sampler  # type: ignore[attr-defined]
    name, changes["sampler"], eta = _sampler(body, default, _sampler_choices(pipe))
    if eta is not None and "eta" in names:
        changes["eta"] = eta
    elif eta:  # "Euler a" is DDIM with eta 1: not drawable without an eta option
        raise InvalidInputError(f"sampler {shown(name)} cannot be honoured: it needs eta, which "
                                f"a {pipe.family} model lacks")
    return name, changes


def check_honourable(body: Txt2ImgRequest, inert: tuple[str, ...] = INERT) -> str | None:
    """Refuse options that would change the image; returns a model named in override_settings."""
    off = "gambar cannot do it"
    require("enable_hr", body.enable_hr, (), "gambar has no hires-fix (img2img) pass; ask "
            "for width/height directly")
    require("subseed_strength", body.subseed_strength, (), "gambar has no variation seeds")
    require("seed_resize_from_h", body.seed_resize_from_h, (-1,), off)
    require("seed_resize_from_w", body.seed_resize_from_w, (-1,), off)
    require("restore_faces", body.restore_faces, (), "gambar has no face restoration")
    require("tiling", body.tiling, (), "gambar cannot draw tileable images")
    require("s_churn", body.s_churn, (), "gambar's Euler adds no churn noise")
    require("s_noise", body.s_noise, (1.0,), off)
    require("styles", body.styles, (), "gambar has no saved styles; put them in the prompt")
    require("script_name", body.script_name, (), "gambar runs no A1111 scripts")
    require("script_args", body.script_args, (), "gambar runs no A1111 scripts")
    require("alwayson_scripts", body.alwayson_scripts, (), "gambar runs no A1111 extensions")
    require("refiner_checkpoint", body.refiner_checkpoint, (), "gambar has no refiner")
    if (body.scheduler or "automatic").lower() != "automatic":
        raise InvalidInputError(f"scheduler={shown(body.scheduler)} cannot be honoured: gambar's "
                                "samplers use their own timestep spacing; use 'automatic'")
    settings = dict(body.override_settings)
    model = settings.pop("sd_model_checkpoint", None)
    if model is not None and not isinstance(model, str):
        raise InvalidInputError(
            f"override_settings.sd_model_checkpoint must be a model's name (a string), not "
            f"{shown(model)}; GET /sdapi/v1/sd-models lists them")
    # Settings at their A1111 defaults change nothing.
    if settings.get("CLIP_stop_at_last_layers") == 1:
        settings.pop("CLIP_stop_at_last_layers")
    for key, value in settings.items():
        if not is_off(value):
            raise InvalidInputError(f"override_settings.{shown(key)} is not supported by gambar")
    reject_unknown(body.model_extra, ignored=inert)
    return model


def model_name(asked: str | None) -> str | None:
    """A1111 titles look like 'name [hash]'; accept them as well as bare names."""
    return asked.split(" [")[0] if asked else None


def _infotext(job: Job, a1111_sampler: str | None, side: int, sha: str,
              extra: Mapping[str, Any]) -> str:
    """A1111's one-paragraph parameters text, which its PNG Info tab and other tools parse;
    the sampling parts only for options the model has, then `extra` ("Denoising strength")."""
    s, o = job.spec, job.spec.options
    neg = f"\nNegative prompt: {o['negative_prompt']}" if o.get("negative_prompt") else ""
    parts = [f"Steps: {o['steps']}"] if "steps" in o else []
    parts += [f"Sampler: {a1111_sampler}"] if a1111_sampler else []
    parts += [f"CFG scale: {o['guidance']:g}"] if "guidance" in o else []
    parts += [f"Seed: {s.seeds[0]}", f"Size: {side}x{side}", f"Model hash: {sha[:10]}",
              f"Model: {s.model}", *(f"{k}: {v}" for k, v in extra.items()),
              f"Version: gambar {gambar.__version__}"]
    return f"{s.prompt}{neg}\n{', '.join(parts)}"


def info_json(body: Txt2ImgRequest, job: Job, pipe: Pipeline, a1111_sampler: str | None,
              side: int, native: int, *, denoising_strength: float | None = None,
              extra_params: Mapping[str, Any] | None = None,
              gambar_extra: Mapping[str, Any] | None = None) -> str:
    """The response's `info`: A1111's JSON string (seeds, sizes, infotexts ...) with gambar's
    own part (job id, options, resizing) under "gambar"."""
    s, o = job.spec, job.spec.options
    n = len(s.seeds)
    negative = o.get("negative_prompt", "")
    extra = dict(extra_params or {})
    infotexts = [_infotext(job, a1111_sampler, side, pipe.sha256, extra)] * n
    info = {
        "prompt": s.prompt, "all_prompts": [s.prompt] * n,
        "negative_prompt": negative, "all_negative_prompts": [negative] * n,
        "seed": s.seeds[0], "all_seeds": list(s.seeds), "subseed": s.seeds[0],
        "all_subseeds": list(s.seeds), "subseed_strength": 0, "width": side, "height": side,
        "sampler_name": a1111_sampler, "scheduler": "automatic",
        "cfg_scale": o.get("guidance"), "steps": o.get("steps"),
        "batch_size": body.batch_size, "restore_faces": False,
        "sd_model_name": s.model, "sd_model_hash": pipe.sha256[:10], "seed_resize_from_w": -1,
        "seed_resize_from_h": -1, "denoising_strength": denoising_strength,
        "extra_generation_params": extra, "index_of_first_image": 0, "infotexts": infotexts,
        "styles": [], "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created)),
        "clip_skip": 1, "is_using_inpainting_conditioning": False,
        "version": f"gambar {gambar.__version__}",
        "gambar": {"job_id": job.id, "family": pipe.family, "options": o,
                   "model_sha256": pipe.sha256,
                   **resize_info(int(o.get("size", native)), s.output_size),
                   **(gambar_extra or {})},
    }
    return json.dumps(info)


def declared(body: BaseModel) -> dict[str, Any]:
    """The request's declared fields, echoed as A1111's `parameters`: the extras that got here
    are inert, and echoing them would send back whatever a client nested in them."""
    return body.model_dump(exclude=set(body.model_extra or ()))


def b64(pngs: list[bytes]) -> list[str]:
    return [base64.b64encode(p).decode("ascii") for p in pngs]


@router.post("/txt2img", summary="Text to image (AUTOMATIC1111 API)")
async def txt2img(body: Txt2ImgRequest, request: Request) -> dict[str, Any]:
    """Draw batch_size x n_iter images; answer base64 PNGs, the parameters and an info JSON."""
    service: JobService = request.app.state.service
    model, pipe = service.model(model_name(check_honourable(body)))
    native = native_size(model, pipe)
    side = requested_side(body, native)
    a1111_sampler, changes = sampling_changes(body, pipe)
    drawn = drawing_size(pipe, native, side)
    if drawn != native:
        changes["size"] = drawn
    spec = service.make_spec(
        prompt=body.prompt, n=body.batch_size * body.n_iter,
        seed=None if body.seed == -1 else body.seed, model=model, options=changes,
        output_size=output_size(drawn, side))
    job = await run_to_end(request, spec)
    pngs = await asyncio.to_thread(read_pngs, service, job) if body.send_images else []
    return {"images": b64(pngs), "parameters": declared(body),
            "info": info_json(body, job, pipe, a1111_sampler, side, native)}


def requested_side(body: Txt2ImgRequest, native: int) -> int:
    """One side given: a square of it (gambar draws squares); none: the model's native size."""
    return square_side(body.width or body.height or native, body.height or body.width or native)


@router.get("/sd-models", summary="Models (A1111 format)")
def sd_models(request: Request) -> list[dict[str, Any]]:
    service: JobService = request.app.state.service
    return [{"title": f"{name} [{pipe.sha256[:10]}]", "model_name": name,
             "hash": pipe.sha256[:10], "sha256": pipe.sha256, "filename": name, "config": None}
            for name, pipe in service.pipelines.items()]


@router.get("/samplers", summary="Samplers of the served models (A1111 names, gambar's)")
def samplers(request: Request) -> list[dict[str, Any]]:
    service: JobService = request.app.state.service
    choices = tuple(dict.fromkeys(c for pipe in service.pipelines.values()
                                  for c in _sampler_choices(pipe)))
    return [{"name": name, "aliases": list(SAMPLERS.get(name, ("", None, ()))[2]),
             "options": {"gambar_sampler": SAMPLERS[name][0] if name in SAMPLERS else name}}
            for name in _a1111_names(choices)]


@router.get("/schedulers", summary="Schedulers (only 'automatic')")
def schedulers() -> list[dict[str, Any]]:
    return [{"name": "automatic", "label": "Automatic", "aliases": None,
             "default_rho": -1, "need_inner_model": False}]


@router.get("/options", summary="Current options (A1111 format; read-only)")
def options(request: Request) -> dict[str, Any]:
    service: JobService = request.app.state.service
    pipe = service.pipelines[service.default_model]
    return {"sd_model_checkpoint": f"{service.default_model} [{pipe.sha256[:10]}]",
            "samples_format": "png", "CLIP_stop_at_last_layers": 1}


@router.get("/scripts", summary="Scripts (none)")
def scripts() -> dict[str, list[str]]:
    return {"txt2img": [], "img2img": []}


@router.get("/progress", summary="Progress of your running job (A1111 format)")
def progress(request: Request) -> dict[str, Any]:
    service: JobService = request.app.state.service
    jobs = service.jobs_of(client_key(request))
    running = next((j for j in jobs if j.state == State.RUNNING), None)
    active = sum(j.state in (State.QUEUED, State.RUNNING) for j in jobs)
    step, total = (running.step, running.total_steps) if running else (0, 0)
    return {"progress": step / total if total else 0.0, "eta_relative": 0.0,
            "state": {"skipped": False, "interrupted": False, "job": running.id if running else "",
                      "job_count": active, "job_timestamp": "0", "job_no": 0,
                      "sampling_step": step, "sampling_steps": total},
            "current_image": None, "textinfo": None}


@router.post("/interrupt", summary="Stop your running jobs")
def interrupt(request: Request) -> dict[str, Any]:
    service: JobService = request.app.state.service
    for job in service.jobs_of(client_key(request)):
        if job.state == State.RUNNING:
            service.cancel(job.id)
    return {}
