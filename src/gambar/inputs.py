"""Named inputs besides the prompt: an init image (img2img), a mask (inpainting), a layout
(boxes with what goes in them), a reference image (variations).

A family declares which it accepts (`Pipeline.inputs`); the CLI reads them from files
(`--init`, `--mask`, `--layout`, `--image`), the server from base64/JSON fields, and both hand
`generate` the same decoded values. Each input's `digest` (sha256 of its content, not of the
file's bytes, so re-saving a PNG keeps it) goes into the image's provenance; replay checks it.

Torch-free: the server checks inputs before queueing a job.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from gambar.errors import InvalidInputError, shown
from gambar.imaging import open_image
from gambar.text.checks import check_encodable

# name -> what it holds (for help texts and errors)
INPUTS: dict[str, str] = {
    "init": "an image to start from (img2img); how much changes is the 'strength' option",
    "mask": "a mask image: white where to draw anew, black where to keep the init image",
    "layout": "a JSON layout: [{\"phrase\": \"a red circle\", \"box\": [x0, y0, x1, y1]}, ...], "
              "box corners as fractions of the side (0..1), top-left origin",
    "image": "a reference image whose content new images share (variations)",
}
MAX_LAYOUT_OBJECTS = 16
MAX_PHRASE_CHARS = 100
MAX_LAYOUT_BYTES = 64 * 1024


@dataclass(frozen=True)
class Box:
    """One layout object: a box in fractions of the image side, and the phrase of the prompt
    it grounds (GLIGEN's (phrase, box) pairs; may be empty)."""

    x0: float
    y0: float
    x1: float
    y1: float
    phrase: str


@dataclass(frozen=True)
class Layout:
    objects: tuple[Box, ...]

    @classmethod
    def from_json(cls, data: Any, where: str = "the layout") -> Layout:
        """A checked Layout from parsed JSON; a one-line error naming what is wrong."""
        if not isinstance(data, list):
            raise InvalidInputError(f'{where} must be a JSON list of objects, e.g. '
                                    f'[{{"phrase": "a red circle", "box": [0.1, 0.1, 0.4, 0.4]}}]')
        items = data
        if not 1 <= len(items) <= MAX_LAYOUT_OBJECTS:
            raise InvalidInputError(
                f"{where} must hold 1 to {MAX_LAYOUT_OBJECTS} objects, not {len(items)}")
        boxes = []
        for k, item in enumerate(items):
            at = f"{where}: object {k}"
            if not isinstance(item, Mapping):
                raise InvalidInputError(f"{at} must be an object with 'box' and 'phrase'")
            _no_other_keys(item, ("phrase", "box"), at)
            box, phrase = item.get("box"), item.get("phrase", "")
            if (not isinstance(box, list) or len(box) != 4 or not all(
                    type(v) is int or (type(v) is float and math.isfinite(v)) for v in box)):
                raise InvalidInputError(f"{at}: 'box' must be four numbers [x0, y0, x1, y1]")
            x0, y0, x1, y1 = box  # compared before float(): an int may be past float's range
            if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
                raise InvalidInputError(
                    f"{at}: box {shown(box)} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
            if not isinstance(phrase, str) or len(phrase) > MAX_PHRASE_CHARS:
                raise InvalidInputError(
                    f"{at}: 'phrase' must be text of at most {MAX_PHRASE_CHARS} characters")
            check_encodable(phrase, f"{at}: its phrase")
            boxes.append(Box(float(x0), float(y0), float(x1), float(y1), phrase))
        return cls(tuple(boxes))

    def to_json(self) -> list[dict[str, Any]]:
        return [{"phrase": b.phrase, "box": [b.x0, b.y0, b.x1, b.y1]} for b in self.objects]


def _no_other_keys(data: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    """A misspelt key ('lable') would be ignored: refuse it, naming it."""
    for key in data:
        if key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InvalidInputError(f"{where}: unknown key {shown(key)}; {hint}the keys are "
                                    f"{', '.join(keys)}")


# Image modes read as they are (after alpha is flattened); 16-bit and float ones would be clipped
# at 255 by a conversion, so they are refused rather than silently washed out.
EIGHT_BIT_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK",
                   "YCbCr", "LAB", "HSV")


def normalize(name: str, value: Any) -> Image.Image | Layout:
    """An input as every family receives it: a layout as a Layout; an image upright (EXIF
    orientation applied), alpha composited onto white and in RGB, so that its digest depends on
    its pixels only, not on how a tool saved it. Anything else is a one-line error."""
    if name == "layout":
        if not isinstance(value, Layout):
            raise InvalidInputError(f"input 'layout' must be a gambar.inputs.Layout (read one "
                                    f"with read_input or Layout.from_json), not "
                                    f"{type(value).__name__}")
        return value
    if not isinstance(value, Image.Image):
        raise InvalidInputError(f"input {name!r} must be a PIL image (gambar.inputs.read_input "
                                f"reads a file), not {type(value).__name__}")
    if value.width < 1 or value.height < 1:
        raise InvalidInputError(f"input {name!r} is an empty image")
    if value.mode not in EIGHT_BIT_MODES:
        raise InvalidInputError(f"input {name!r} has {value.mode} pixels (16-bit or float); "
                                "save it as an 8-bit RGB or greyscale image")
    image = ImageOps.exif_transpose(value)
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or image.mode in ("P", "PA") and "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def digest(value: Image.Image | Layout) -> str:
    """sha256 of an input's content (as `normalize` gives it): an image's size and RGB pixels;
    a layout's canonical JSON. The same content gives the same digest however it was saved."""
    h = hashlib.sha256()
    if isinstance(value, Layout):
        h.update(json.dumps(value.to_json(), sort_keys=True, separators=(",", ":")).encode())
    else:
        h.update(f"{value.mode} {value.width}x{value.height}\n".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def check_names(given: Mapping[str, Any], accepted: frozenset[str], family: str) -> None:
    """Refuse an input the family does not take (one line naming what it does take)."""
    for name in given:
        if name not in INPUTS:
            raise InvalidInputError(f"unknown input {shown(name)}; inputs are: "
                                    f"{', '.join(INPUTS)}")
        if name not in accepted:
            takes = ", ".join(sorted(accepted)) or "none"
            raise InvalidInputError(f"a {family} model takes no {name!r} input (it takes: "
                                    f"{takes})")


# An input is resized to the model's side (<= 256 px): 16 MP is ample, and bounds the memory one
# request's decoding may take.
MAX_INPUT_PIXELS = 4096 * 4096


def read_input(name: str, path: str | Path) -> Image.Image | Layout:
    """An input from a file, as the CLI's --init/--mask/--layout/--image give it."""
    path = Path(path)
    if name == "layout":
        try:
            with path.open("rb") as f:  # no more than the cap: --layout /dev/zero must end
                raw = f.read(MAX_LAYOUT_BYTES + 1)
        except OSError as exc:
            raise InvalidInputError(f"cannot read --layout {path}: {exc.strerror}") from None
        return parse_layout(raw, f"--layout {path}")
    return normalize(name, open_image(path, f"--{name} {path}", max_pixels=MAX_INPUT_PIXELS))


def parse_layout(raw: bytes | str, where: str) -> Layout:
    if len(raw) > MAX_LAYOUT_BYTES:
        raise InvalidInputError(f"{where} is over {MAX_LAYOUT_BYTES // 1024} KB")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidInputError(f"{where} is not valid JSON") from None
    return Layout.from_json(data, where)


def decode_input(name: str, value: Any) -> Image.Image | Layout:
    """An input from a request body: base64 PNG/JPEG for images, a JSON object for a layout."""
    where = f"input {name!r}"
    if name == "layout":
        return Layout.from_json(value, where)
    return normalize(name, open_image(decode_base64(value, where), where,
                                      max_pixels=MAX_INPUT_PIXELS))


def decode_base64(value: Any, where: str) -> bytes:
    """The bytes of a base64 image in a request body, bare or as a data: URL."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{where} must be a base64-encoded image")
    text = value
    if value.startswith("data:"):  # a data: URL, "data:image/png;base64,<base64>"
        _, comma, text = value.partition(",")
        if not comma:
            raise InvalidInputError(f"{where} is a data: URL without its base64 content")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(f"{where} is not valid base64") from None
