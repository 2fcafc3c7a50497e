"""The AUTOMATIC1111 dialect's POST /sdapi/v1/img2img: txt2img's body and rules (compat_a1111.py)
plus an init image and a mask, drawn by the model's `init` and `mask` inputs.

A1111 -> gambar:
- init_images: one base64 PNG/JPEG (a "data:image/...;base64," prefix allowed) -> `init`.
  A1111 spreads several over the batch; a gambar job starts from one, so more is a 422.
- denoising_strength (0..1) -> `strength`: the share of the steps redrawn; 0 returns the init
  image as the model reads it, 1 ignores it (the image txt2img draws with that seed).
- mask (white = redraw) -> `mask`, of the init image's size.

The other img2img fields, each honoured, refused (422) or inert:
- Only read with a mask, as in A1111, so inert without one: mask_blur(_x/_y),
  inpainting_fill, inpaint_full_res(_padding), inpainting_mask_invert.
- inpainting_mask_invert: honoured (the mask is inverted). An RGBA mask with transparency is
  its alpha channel, thresholded at 128, as in A1111.
- mask_blur (A1111's default 4; it sets mask_blur_x and mask_blur_y): honoured, a Gaussian of
  that standard deviation in the init image's pixels (PIL's; A1111 uses OpenCV's, so the
  edge's grey levels may differ slightly). The soft mask then blends drawn and kept pixels,
  as A1111's overlay does.
- inpainting_fill: 0 "fill" (A1111's default) honoured: the masked part of the init image is
  replaced by the colours around it before it is noised; 1 "original" is gambar's own rule.
  2 "latent noise" and 3 "latent nothing" (fills of an autoencoder's latents) are not drawn
  by gambar, whose latent model keeps rule 1 for every mask: 422.
- inpaint_full_res true ("Only masked", A1111's API default) draws a crop around the mask and
  pastes it back at the init image's size; gambar draws the whole picture, so with a mask it
  is a 422 asking for inpaint_full_res false ("Whole picture").
- resize_mode: gambar crops a non-square init image to its centre square (A1111's 1, "Crop
  and resize"); 0 "Just resize" (stretch) is done here; 2 "Resize and fill" and 3 "latent
  upscale" of a non-square image: 422. A square image comes out alike in all four.
- initial_noise_multiplier other than 1 (it scales the noise added to the init image): 422.
- image_cfg_scale (read by instruct-pix2pix models only) and include_init_images (whether
  `parameters` echoes the inputs) change no image: accepted.

With a mask (or an init image to stretch) the inputs are prepared here as above and brought
to the size the model draws at; those are what the job draws from: the images' provenance
holds their digests, and info.gambar.prepared_inputs holds them (base64 PNGs) for a replay
(`gambar generate --replay out.png --init init.png --mask mask.png`). Otherwise the init image
is passed on as sent, as the other routes pass inputs.
"""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any

from fastapi import APIRouter, Depends, Request
from PIL import Image, ImageFilter, ImageOps
from pydantic import Field

from gambar.errors import InvalidInputError, shown
from gambar.imaging import open_image
from gambar.inputs import MAX_INPUT_PIXELS, decode_base64, normalize
from gambar.pipeline import Pipeline
from gambar.server.compat import native_size, read_pngs, require, run_to_end
from gambar.server.compat_a1111 import (
    Txt2ImgRequest,
    b64,
    check_honourable,
    declared,
    info_json,
    model_name,
    requested_side,
    sampling_changes,
)
from gambar.server.routes import bearer
from gambar.server.service import JobService
from gambar.server.sizing import output_size

router = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111-compatible"],
                   dependencies=[Depends(bearer)])

# A1111's "fill" (inpainting_fill 0): the kept pixels blurred at shrinking radii (pixels of the
# output size) and laid over one another, so the hole takes the colours around it; (radius,
# times laid).
FILL_PASSES = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))
FILL, ORIGINAL = 0, 1
JUST_RESIZE, CROP_AND_RESIZE = 0, 1
MAX_MASK_BLUR = 1024  # A1111's page stops at 64; past the image's side a blur changes nothing


class Img2ImgRequest(Txt2ImgRequest):
    """A1111's img2img body: txt2img's fields and these (see the module's doc)."""

    init_images: list[Any] = Field(default_factory=list,
                                   description="one base64 PNG/JPEG, data: URL prefix allowed")
    denoising_strength: float = Field(0.75, ge=0.0, le=1.0)
    mask: Any = Field(None, description="base64 PNG/JPEG: white is redrawn, black kept")
    mask_blur: int | None = Field(None, ge=0, le=MAX_MASK_BLUR)
    mask_blur_x: int = Field(4, ge=0, le=MAX_MASK_BLUR)
    mask_blur_y: int = Field(4, ge=0, le=MAX_MASK_BLUR)
    inpainting_fill: int = Field(FILL, ge=0, le=3)
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = Field(0, ge=0)
    inpainting_mask_invert: int = Field(0, ge=0, le=1)
    resize_mode: int = Field(JUST_RESIZE, ge=0, le=3)
    initial_noise_multiplier: float | None = None
    image_cfg_scale: float | None = None
    include_init_images: bool = False


def _check_fields(body: Img2ImgRequest, pipe: Pipeline, model: str) -> None:
    """Refuse what gambar cannot draw, before any image is decoded."""
    if "init" not in pipe.inputs or "strength" not in pipe.Options.names():
        raise InvalidInputError(f"model {model!r} ({pipe.family}) takes no init image, so it "
                                "cannot do img2img; use /sdapi/v1/txt2img")
    if len(body.init_images) != 1:
        raise InvalidInputError(
            f"init_images holds {len(body.init_images)} images; gambar draws a request from "
            "exactly one (use batch_size for several images from it)")
    if body.initial_noise_multiplier not in (None, 1.0):  # 0 means something here: no is_off
        raise InvalidInputError(
            f"initial_noise_multiplier={shown(body.initial_noise_multiplier)} cannot be "
            "honoured: gambar noises the init image by its schedule alone; send 1")
    if body.mask is None:
        return
    require("inpaint_full_res", body.inpaint_full_res, (),
            "gambar inpaints the whole picture; send inpaint_full_res false ('Whole picture')")
    require("inpainting_fill", body.inpainting_fill, (ORIGINAL,),
            "gambar draws no 'latent noise' or 'latent nothing' fill; use 0 (fill) or 1 "
            "(original)")


def _a1111_mask(data: bytes) -> Image.Image:
    """A mask as A1111 reads one: the alpha channel of an RGBA image that has transparency,
    thresholded at 128 (an editor's strokes on a clear layer), else its grey levels."""
    image = ImageOps.exif_transpose(open_image(data, "mask", max_pixels=MAX_INPUT_PIXELS))
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        image = image.getchannel("A").point(lambda a: 255 if a > 128 else 0)
    return normalize("mask", image).convert("L")


def _to_square(image: Image.Image, side: int, stretch: bool) -> Image.Image:
    """`image` at side x side: stretched, or centre-cropped by the pipeline's own rule (so the
    pipeline leaves the result as it is, and a square image is resized alike either way)."""
    if stretch:
        return image.resize((side, side), Image.Resampling.LANCZOS)
    return ImageOps.fit(image, (side, side), Image.Resampling.LANCZOS)


def _fill(init: Image.Image, mask: Image.Image, scale: float) -> Image.Image:
    """`init` with its masked part (white) filled with the colours around it (A1111's fill,
    at `scale` times its radii)."""
    kept = Image.new("RGBa", init.size)  # premultiplied: blurring spreads colour, not black
    kept.paste(init.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask))
    out = Image.new("RGBA", init.size)
    for radius, times in FILL_PASSES:
        layer = kept.filter(ImageFilter.GaussianBlur(radius * scale)).convert("RGBA")
        for _ in range(times):
            out.alpha_composite(layer)
    return out.convert("RGB")  # the last layer is the kept pixels themselves, unchanged


def _png_b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def prepare_inputs(body: Img2ImgRequest, native: int, side: int
                   ) -> tuple[dict[str, str], list[str]]:
    """(inputs for the job, as base64; what was done to them) for the init image and mask of
    a request, prepared as A1111 prepares them (see the module's doc), at the drawing size
    `native` for an output of `side`."""
    sent = body.init_images[0]
    init = normalize("init", open_image(decode_base64(sent, "init_images[0]"),
                                        "init_images[0]", max_pixels=MAX_INPUT_PIXELS))
    square = init.width == init.height
    if not square and body.resize_mode not in (JUST_RESIZE, CROP_AND_RESIZE):
        raise InvalidInputError(
            f"resize_mode={body.resize_mode} cannot be honoured for a {init.width}x"
            f"{init.height} init image: gambar stretches (0) or crops (1) it to a square; send "
            "one of those, or a square image")
    stretch = not square and body.resize_mode == JUST_RESIZE
    if body.mask is None:
        if not stretch:
            return {"init": sent}, []
        return ({"init": _png_b64(_to_square(init, native, stretch=True))},
                [f"init image stretched to {native}x{native} (resize_mode 0)"])
    mask = _a1111_mask(decode_base64(body.mask, "mask"))
    if mask.size != init.size:
        raise InvalidInputError(
            f"the mask is {mask.width}x{mask.height} but init_images[0] {init.width}x"
            f"{init.height}; give them one size")
    done = []
    if body.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
        done.append("mask inverted")
    blur_x, blur_y = ((body.mask_blur, body.mask_blur) if body.mask_blur is not None
                      else (body.mask_blur_x, body.mask_blur_y))
    if blur_x or blur_y:  # in the init image's pixels, before resizing, as A1111
        mask = mask.filter(ImageFilter.GaussianBlur((blur_x, blur_y)))
        done.append(f"mask blurred (Gaussian, sd {blur_x}x{blur_y} px)")
    if init.size != (native, native):
        done.append(f"init image and mask {'stretched' if stretch else 'cropped and resized'} "
                    f"to {native}x{native}")
    init, mask = (_to_square(im, native, stretch) for im in (init, mask))
    if body.inpainting_fill == FILL:
        init = _fill(init, mask, native / side)  # A1111 fills at the output size
        done.append("masked part filled with the colours around it (inpainting_fill 0)")
    return {"init": _png_b64(init), "mask": _png_b64(mask)}, done


@router.post("/img2img", summary="Image to image, inpainting (AUTOMATIC1111 API)")
async def img2img(body: Img2ImgRequest, request: Request) -> dict[str, Any]:
    """Redraw the init image (where the mask is white) batch_size x n_iter times; answer base64
    PNGs, the parameters and an info JSON, as /txt2img."""
    service: JobService = request.app.state.service
    model, pipe = service.model(model_name(check_honourable(body)))
    _check_fields(body, pipe, model)
    native = native_size(model, pipe)
    side = requested_side(body, native)
    a1111_sampler, changes = sampling_changes(body, pipe)
    changes["strength"] = body.denoising_strength
    # Off the event loop: decoding, blurring and encoding images take a moment.
    inputs, prepared = await asyncio.to_thread(prepare_inputs, body, native, side)
    spec = await asyncio.to_thread(
        service.make_spec, prompt=body.prompt, n=body.batch_size * body.n_iter,
        seed=None if body.seed == -1 else body.seed, model=model, options=changes,
        inputs=inputs, output_size=output_size(native, side))
    job = await run_to_end(request, spec)
    pngs = await asyncio.to_thread(read_pngs, service, job) if body.send_images else []
    extra: dict[str, Any] = {"Denoising strength": body.denoising_strength}
    gambar_extra: dict[str, Any] = {"inputs": job.images[0].provenance.get("inputs", {})}
    if body.mask is not None:
        blur = body.mask_blur if body.mask_blur is not None else body.mask_blur_x
        extra.update({"Mask blur": blur, "Masked content": ("fill", "original")[
            body.inpainting_fill]})
    if prepared:
        gambar_extra.update(prepared=prepared, prepared_inputs=inputs)
    parameters = declared(body)
    if not body.include_init_images:  # A1111 echoes the inputs only when asked to
        parameters.update(init_images=None, mask=None)
    return {"images": b64(pngs), "parameters": parameters,
            "info": info_json(body, job, pipe, a1111_sampler, side, native,
                              denoising_strength=body.denoising_strength,
                              extra_params=extra, gambar_extra=gambar_extra)}
