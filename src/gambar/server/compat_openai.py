"""The OpenAI Images dialect: POST /v1/images/generations and GET /v1/models, so that the
`openai` package (`OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=...)`) works unchanged.

Extensions beyond OpenAI's fields (pass them with the client's `extra_body`): `seed`, and any
option or input of the chosen model by its name (GET /api/models lists them: negative_prompt,
steps, guidance, sampler ... for a diffusion model; a layout for a model that takes one). The
request body's schema documents those of the served models (`openai_router` builds it when the
app is made). An option the model's family lacks is answered 400 naming it, unless it is off
(null, 0, "", false): the openai client sends no extension of its own, so only what a user
asked for arrives.
Sizes: "auto" or the model's native size (its `size` option's default) draws natively; a size
its cascade draws is drawn by the super-resolution stages; any other square size is drawn at
the nearest of those and resized with Lanczos, as the response's `gambar.resize` says. A
non-square size, `quality: hd`, `style: natural`, a transparent background, JPEG/WebP output or
streaming cannot be honoured and are answered 400.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model

from gambar.pipeline import MAX_PROMPT_CHARS, Pipeline
from gambar.seeding import MAX_SEED
from gambar.server.auth import sign
from gambar.server.compat import (
    drawing_size,
    extensions,
    native_size,
    read_pngs,
    require,
    run_to_end,
)
from gambar.server.jobs import MAX_IMAGES, Job
from gambar.server.routes import bearer, image_url
from gambar.server.schemas import JobRequestBase, job_request_model
from gambar.server.service import JobService
from gambar.server.sizing import output_size, parse_size, resize_info


class ImageGenerationRequest(BaseModel):
    """OpenAI's image-generation body (fields gambar cannot honour are refused, not ignored)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: str | None = Field(None, description="a served model's name; omitted: the default")
    n: int | None = Field(None, ge=1, le=MAX_IMAGES)
    size: str | None = Field(None, description="'auto' or a square WxH, e.g. 512x512")
    response_format: Literal["url", "b64_json"] | None = None
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    moderation: str | None = None
    stream: bool | None = None
    partial_images: int | None = None
    user: str | None = None
    safety_identifier: str | None = None
    # gambar's extensions: seed, and the model's options and inputs (see the module's doc)
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="seed of the first image")


def openai_request_model(pipelines: Mapping[str, Pipeline]) -> type[ImageGenerationRequest]:
    """ImageGenerationRequest with one documented field per option and input of the served
    models (schemas.job_request_model's schema of it: kind, bounds, choices, which families).

    Only documented: the fields accept any value, as extras do, so that the chosen model's
    Options check it (`extensions`) and an option its family lacks passes when off (steps=0 to
    a GAN) instead of failing bounds taken from another family. OpenAI's own fields keep their
    meaning: `size` is "WxH" here, not the `size` option."""
    props = job_request_model(pipelines).model_json_schema()["properties"]
    fields: dict[str, Any] = {}
    for name, prop in props.items():
        if name in JobRequestBase.model_fields or name in ImageGenerationRequest.model_fields:
            continue
        schema = {k: v for k, v in prop.items() if k not in ("title", "default", "description")}
        fields[name] = (Annotated[Any, WithJsonSchema(schema)],
                        Field(None, description=prop.get("description")))
    return create_model("ImageGenerationRequest", __base__=ImageGenerationRequest,
                        __doc__=ImageGenerationRequest.__doc__, **fields)


def _extensions_given(body: ImageGenerationRequest) -> dict[str, Any]:
    """The extension fields a request set: the documented ones (options and inputs of the
    served models) and any other extra (refused by `extensions` unless off)."""
    declared = {name: getattr(body, name) for name in body.model_fields_set
                if name not in ImageGenerationRequest.model_fields}
    return {**declared, **(body.model_extra or {})}


def _check_honourable(body: ImageGenerationRequest) -> None:
    require("quality", body.quality, ("auto", "standard"),
            "gambar has one quality; set the model's options instead (extensions: GET /api/models "
            "lists them)")
    require("style", body.style, ("vivid",),  # DALL-E 3's default; gambar has no styles
            "gambar has no style setting; describe the look in the prompt")
    require("background", body.background, ("auto", "opaque"),
            "gambar draws opaque images only")
    require("output_format", body.output_format, ("png",),
            "gambar returns PNG (its provenance lives in PNG text chunks)")
    require("output_compression", body.output_compression, (100,),
            "it applies to JPEG/WebP only and gambar returns PNG")
    require("stream", body.stream, (), "gambar answers when the images are done; poll "
            "/api/jobs/{id} for progress instead")
    require("partial_images", body.partial_images, (), "streaming is not supported")
    # moderation, user and safety_identifier do not change an image: accepted as they are.
    # Extra fields are the model's options and inputs (`extensions`).


def _info(job: Job, native: int) -> dict[str, Any]:
    drawn = int(job.spec.options.get("size", native))
    return {"job_id": job.id, "model": job.spec.model, "seeds": list(job.spec.seeds),
            "options": job.spec.options, **resize_info(drawn, job.spec.output_size)}


async def generate(body: ImageGenerationRequest, request: Request) -> dict[str, Any]:
    """The answer to POST /v1/images/generations: draw `n` images, as base64 PNGs or URLs
    served by gambar."""
    service: JobService = request.app.state.service
    _check_honourable(body)
    name, pipe = service.model(body.model)
    native = native_size(name, pipe)
    side = parse_size(body.size, native)
    options, inputs = extensions(pipe, _extensions_given(body))
    drawn = native if inputs else drawing_size(pipe, native, side)  # no cascade for img2img
    if drawn != native:
        options["size"] = drawn
    # Off the event loop: decoding an input image takes a moment.
    spec = await asyncio.to_thread(
        service.make_spec, prompt=body.prompt, n=body.n or 1, seed=body.seed, model=name,
        options=options, inputs=inputs, output_size=output_size(drawn, side))
    job = await run_to_end(request, spec)
    if (body.response_format or "url") == "url":
        sig = sign(job.id, service.settings.tokens)
        base = str(request.base_url).rstrip("/")
        data = [{"url": base + image_url(job.id, im.index) + (f"?sig={sig}" if sig else ""),
                 "revised_prompt": None} for im in job.images]
    else:
        # Reading and encoding up to 16 large PNGs takes a moment: off the event loop.
        pngs = await asyncio.to_thread(read_pngs, service, job)
        data = [{"b64_json": base64.b64encode(png).decode("ascii"), "revised_prompt": None}
                for png in pngs]
    side = job.spec.output_size or int(job.spec.options.get("size", native))
    return {"created": int(job.finished or time.time()), "data": data, "output_format": "png",
            "size": f"{side}x{side}", "background": "opaque", "quality": "standard",
            "gambar": _info(job, native)}


def list_models(request: Request) -> dict[str, Any]:
    service: JobService = request.app.state.service
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                        "owned_by": "gambar"} for name in service.pipelines]}


def openai_router(pipelines: Mapping[str, Pipeline]) -> APIRouter:
    """/v1's routes, with the request body documenting `pipelines`' options and inputs (so it
    is built when the app is made, as /api/jobs's is)."""
    router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"], dependencies=[Depends(bearer)])

    async def generations(body: ImageGenerationRequest, request: Request) -> dict[str, Any]:
        """Draw `n` images and answer with base64 PNGs or URLs served by gambar."""
        return await generate(body, request)

    # FastAPI reads the body's type from the annotation; this one exists only now.
    generations.__annotations__["body"] = openai_request_model(pipelines)
    router.add_api_route("/images/generations", generations, methods=["POST"],
                         summary="Create images (OpenAI Images API)")
    router.add_api_route("/models", list_models, methods=["GET"],
                         summary="Models (OpenAI format)")
    return router

