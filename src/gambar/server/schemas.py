"""Request and response bodies of gambar's own API (/api/...), checked by pydantic.

A request with an unknown field, a wrong type or an out-of-range value is answered 422 with
the field and the reason, before it reaches the queue.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gambar.errors import shown
from gambar.samplers import SAMPLERS
from gambar.seeding import MAX_SEED
from gambar.server.jobs import (
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_PROMPT_CHARS,
    MAX_SIZE,
    MAX_STEPS,
    State,
)

SAMPLER_NAMES = list(SAMPLERS)
_SAMPLER_ENUM: dict[str, Any] = {"enum": SAMPLER_NAMES}  # lists the choices in the schema


class JobRequest(BaseModel):
    """A request to draw `n` images of one prompt. Omitted options take the model's defaults."""

    # allow_inf_nan=False: NaN and Infinity (which Python's JSON parser reads) are refused by
    # name, not by a confusing range message.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [
        {"prompt": "a red circle above a blue square", "n": 2, "seed": 7, "steps": 20}]})

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS,
                        description="what to draw, in English or Indonesian")
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS,
                                 description="what the image should not look like")
    n: int = Field(1, ge=1, le=MAX_IMAGES, description="how many images (seeds seed .. seed+n-1)")
    seed: int | None = Field(None, ge=0, le=MAX_SEED,
                             description="seed of the first image; omitted: random, recorded")
    steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="sampler steps")
    guidance: float | None = Field(None, ge=0, le=MAX_GUIDANCE,
                                   description="classifier-free guidance scale; 1 = off")
    sampler: str | None = Field(None, json_schema_extra=_SAMPLER_ENUM,
                                description="dpmpp (DPM-Solver++ 2M), ddim, ddpm, euler")
    # Multiples of 8 fit every shipped UNet; a model with a coarser stride says so in the job.
    size: int | None = Field(None, ge=8, le=MAX_SIZE, multiple_of=8,
                             description="side in pixels the model draws at; omitted: native")
    model: str | None = Field(None, max_length=200, description="a served model's name")

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError('the prompt is blank; give a description, e.g. "a red circle"')
        return value

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value: str | None) -> str | None:
        if value is not None and value not in SAMPLERS:
            raise ValueError(f"unknown sampler {shown(value)}; choose one of: "
                             f"{', '.join(SAMPLER_NAMES)}")
        return value


class JobSettings(BaseModel):
    """A job's settings with every default resolved: submit these again to redraw it."""

    model: str
    prompt: str
    negative_prompt: str
    n: int
    seed: int
    seeds: list[int]
    steps: int
    guidance: float
    sampler: str
    size: int
    output_size: int | None = Field(None, description="resized to this side after drawing")


class Progress(BaseModel):
    step: int = Field(description="sampler steps done")
    steps: int = Field(description="sampler steps in all (0 until the job starts)")
    fraction: float = Field(ge=0, le=1)


class ImageOut(BaseModel):
    index: int
    seed: int
    url: str = Field(description="the PNG, with its provenance in text chunks")
    provenance: dict[str, Any]


class JobOut(BaseModel):
    """A job's state. Poll it until `state` is done, failed or cancelled."""

    id: str
    state: State
    queue_position: int | None = Field(description="1 = next to run; null unless queued")
    progress: Progress
    settings: JobSettings
    images: list[ImageOut]
    error: str | None
    created: float
    started: float | None
    finished: float | None
    url: str


class JobList(BaseModel):
    jobs: list[JobOut]


class ModelOut(BaseModel):
    name: str
    family: str
    sha256: str
    default: bool = Field(description="used when a request names no model")
    defaults: dict[str, Any] = Field(description="sampler, steps, guidance, size")


class Limits(BaseModel):
    max_images: int = MAX_IMAGES
    max_steps: int = MAX_STEPS
    max_size: int = MAX_SIZE
    max_prompt_chars: int = MAX_PROMPT_CHARS
    max_guidance: float = MAX_GUIDANCE
    samplers: list[str] = SAMPLER_NAMES


class ModelList(BaseModel):
    models: list[ModelOut]
    limits: Limits


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    auth: bool = Field(description="whether the API needs a token")
    queue: dict[str, Any]


class ErrorOut(BaseModel):
    error: str = Field(description="one line saying what is wrong and how to fix it")
    detail: Any = None
