"""Provenance: what made an image, stored in its PNG text chunks, read back for replay."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from gambar.errors import CorruptFileError, InvalidInputError
from gambar.fsutil import atomic_write_bytes

KEY = "gambar"  # one JSON text chunk holds every field, so nothing is lost in type conversion
# Fields also written as separate plain chunks so that other tools (exiftool, A1111-style
# viewers) show the essentials without parsing JSON.
PLAIN_FIELDS = ("prompt", "negative_prompt", "seed", "model_name", "model_sha256", "sampler",
                "steps", "guidance")
# The order `gambar info` prints the fields in (DESIGN.md "Provenance").
FIELDS = ("prompt", "negative_prompt", "seed", "index_in_batch", "batch_size", "family",
          "model_name", "model_sha256", "text_encoder", "sampler", "steps", "guidance",
          "sampler_options", "size", "dtype", "gambar_version", "torch_version")


def png_bytes(image: Image.Image, provenance: dict[str, Any]) -> bytes:
    """Encode `image` as PNG with `provenance` in its text chunks."""
    info = PngImagePlugin.PngInfo()
    info.add_text(KEY, json.dumps(provenance, sort_keys=True))
    for field in PLAIN_FIELDS:
        if provenance.get(field) is not None:
            info.add_text(field, str(provenance[field]))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_png(path: Path, image: Image.Image, provenance: dict[str, Any], *,
             overwrite: bool = False) -> Path:
    """Write a PNG with provenance atomically; refuse to replace a file unless `overwrite`."""
    atomic_write_bytes(Path(path), png_bytes(image, provenance), overwrite=overwrite)
    return Path(path)


def read_provenance(path: Path) -> dict[str, Any]:
    """The provenance stored in a PNG written by gambar."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"no such image: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            text = dict(getattr(im, "text", {}))
    except (OSError, SyntaxError) as exc:
        raise CorruptFileError(f"{path} is not a readable image ({exc})") from None
    if KEY not in text:
        raise InvalidInputError(f"{path} carries no gambar provenance (not made by gambar?)")
    try:
        return json.loads(text[KEY])
    except json.JSONDecodeError:
        raise CorruptFileError(f"{path}: its gambar provenance is not valid JSON") from None


def format_provenance(prov: dict[str, Any]) -> str:
    """Human-readable lines, known fields first."""
    keys = [k for k in FIELDS if k in prov] + sorted(k for k in prov if k not in FIELDS)
    width = max(len(k) for k in keys) if keys else 0
    return "\n".join(f"{k.ljust(width)}  {json.dumps(prov[k], ensure_ascii=False)}" for k in keys)
