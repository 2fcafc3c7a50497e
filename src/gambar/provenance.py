"""Provenance: what made an image, stored in its PNG text chunks, read back for replay."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from gambar.config import nesting_depth
from gambar.errors import CorruptFileError, InvalidInputError
from gambar.fsutil import atomic_write_bytes, is_file

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_MAX_CHUNK = 2**31 - 1  # PNG spec 5.3: a chunk's length is at most 2^31 - 1
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
# Limits on what `read_provenance` accepts, far above what gambar writes (about 1 KB per image:
# a 64-image grid holds ~70 KB, a 13 x 4 sample sheet ~55 KB) and low enough to bound memory.
MAX_TEXT_BYTES = 16 * 2**20
MAX_DEPTH = 16  # gambar's own nests 4 deep: sheet_of -> image -> sampler_options -> value
KEY = "gambar"  # one JSON text chunk holds every field, so nothing is lost in type conversion
# Fields also written as separate plain chunks so that other tools (exiftool, A1111-style
# viewers) show the essentials without parsing JSON.
PLAIN_FIELDS = ("prompt", "negative_prompt", "seed", "model_name", "model_sha256", "sampler",
                "steps", "guidance")
# The order `gambar info` prints the fields in (DESIGN.md "Provenance").
FIELDS = ("prompt", "negative_prompt", "seed", "index_in_batch", "batch_size", "family",
          "model_name", "model_sha256", "text_encoder", "sampler", "steps", "guidance",
          "sampler_options", "size", "dtype", "gambar_version", "torch_version")


FRAME_MS = 125  # an animated PNG's frame duration: 8 frames a second


def png_bytes(image: Image.Image | Sequence[Image.Image], provenance: dict[str, Any]) -> bytes:
    """Encode an image as PNG, or several frames as an animated PNG (APNG: a plain PNG viewer
    shows the first frame), with `provenance` in its text chunks either way."""
    frames = [image] if isinstance(image, Image.Image) else list(image)
    info = PngImagePlugin.PngInfo()
    info.add_text(KEY, json.dumps(provenance, sort_keys=True))
    for field in PLAIN_FIELDS:
        if provenance.get(field) is not None:
            info.add_text(field, str(provenance[field]))
    buf = io.BytesIO()
    if len(frames) == 1:
        frames[0].save(buf, format="PNG", pnginfo=info)
    else:
        # Pillow merges a frame equal to the one before into it (summing durations), so a
        # clip of still frames would lose its frame count. Alternating the blend op (source,
        # over: the same pixels for opaque frames) keeps every frame a frame of its own.
        frames[0].save(buf, format="PNG", pnginfo=info, save_all=True,
                       append_images=frames[1:], duration=FRAME_MS, loop=0,
                       blend=[k % 2 for k in range(len(frames))])
    return buf.getvalue()


def save_png(path: Path, image: Image.Image | Sequence[Image.Image],
             provenance: dict[str, Any], *, overwrite: bool = False) -> Path:
    """Write a PNG with provenance atomically (creating its folder); refuse to replace a file
    unless `overwrite`. A failed write (disk full, no permission) is a one-line error."""
    path = Path(path)
    data = png_bytes(image, provenance)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data, overwrite=overwrite)
    except OSError as exc:
        raise InvalidInputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def read_provenance(path: Path) -> dict[str, Any]:
    """The provenance stored in a PNG written by gambar: a JSON object, read without decoding
    a single pixel (a forged 50000x50000 header costs nothing)."""
    path = Path(path)
    if not is_file(path):
        raise InvalidInputError(f"no such image: {path}")
    try:
        text = _text_chunk(path, KEY)
    except OSError as exc:
        raise CorruptFileError(f"{path} is not a readable image ({exc.strerror})") from None
    if text is None:
        raise InvalidInputError(f"{path} carries no gambar provenance (not made by gambar?)")
    try:
        prov = json.loads(text)
    except (json.JSONDecodeError, RecursionError):  # the C parser recurses once per [ or {
        raise CorruptFileError(f"{path}: its gambar provenance is not valid JSON") from None
    if not isinstance(prov, dict):
        raise CorruptFileError(
            f"{path}: its gambar provenance is {JSON_NAMES.get(type(prov), 'a value')}, not a "
            "JSON object")
    if nesting_depth(prov, MAX_DEPTH) > MAX_DEPTH:
        raise CorruptFileError(f"{path}: its gambar provenance nests deeper than {MAX_DEPTH} "
                               "levels; gambar never writes that")
    return prov


def _text_chunk(path: Path, keyword: str) -> str | None:
    """The text of the first tEXt, zTXt or iTXt chunk named `keyword` (PNG spec 11.3.4).

    A small reader of its own rather than PIL: PIL's `.text` decodes every pixel first (text may
    follow the image data), and Image.open refuses headers over its bomb limit. This one seeks
    past every other chunk, never inflates image data, caps what it reads and inflates at
    MAX_TEXT_BYTES, and checks the CRC of the chunk it returns."""
    want = keyword.encode("latin-1") + b"\0"
    with path.open("rb") as f:
        if f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
            raise CorruptFileError(f"{path} is not a readable image (not a PNG file)")
        size = os.fstat(f.fileno()).st_size
        while True:
            head = f.read(8)
            if len(head) < 8:
                raise CorruptFileError(f"{path} is not a readable image (cut short: no IEND)")
            length, kind = struct.unpack(">I4s", head)
            start = f.tell()
            if length > PNG_MAX_CHUNK or start + length + 4 > size:
                raise CorruptFileError(f"{path} is not a readable image (cut short or damaged: "
                                       f"a chunk claims {length} bytes)")
            if kind == b"IEND":
                return None
            if kind not in TEXT_CHUNKS or length < len(want) or f.read(len(want)) != want:
                f.seek(start + length + 4)  # past the data and the CRC, unread
                continue
            if length > MAX_TEXT_BYTES:
                raise CorruptFileError(f"{path}: its gambar provenance is {length} bytes, over "
                                       f"the {MAX_TEXT_BYTES} gambar reads")
            body = want + f.read(length - len(want))
            (crc,) = struct.unpack(">I", f.read(4))
            if zlib.crc32(kind + body) != crc:
                raise CorruptFileError(f"{path}: its gambar provenance chunk is damaged (CRC)")
            return _decode_text(kind, body[len(want):], path)


def _decode_text(kind: bytes, data: bytes, path: Path) -> str:
    """The text of a tEXt / zTXt / iTXt chunk body after its keyword."""
    if kind == b"tEXt":
        return data.decode("latin-1")
    if kind == b"zTXt":
        return _inflate(data[1:], path).decode("latin-1")
    compressed, rest = data[:1] == b"\1", data[2:]  # iTXt: flag, method, language, keyword
    parts = rest.split(b"\0", 2)
    if len(parts) < 3:
        raise CorruptFileError(f"{path}: its gambar provenance chunk is malformed")
    raw = _inflate(parts[2], path) if compressed else parts[2]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptFileError(f"{path}: its gambar provenance is not UTF-8 text") from None


def _inflate(data: bytes, path: Path) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_TEXT_BYTES)
    except zlib.error:
        raise CorruptFileError(f"{path}: its gambar provenance is not valid zlib data") from None
    if inflater.unconsumed_tail:
        raise CorruptFileError(f"{path}: its gambar provenance inflates to over "
                               f"{MAX_TEXT_BYTES} bytes")
    return out


def format_provenance(prov: dict[str, Any]) -> str:
    """Human-readable lines, known fields first."""
    keys = [k for k in FIELDS if k in prov] + sorted(k for k in prov if k not in FIELDS)
    width = max(len(k) for k in keys) if keys else 0
    return "\n".join(f"{k.ljust(width)}  {_shown(prov[k])}" for k in keys)


def _shown(value: Any) -> str:
    """JSON, readable (non-ASCII kept) unless it holds lone surrogates no terminal can print."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value)
    return text


@dataclass(frozen=True)
class Replay:
    """What `gambar generate --replay` needs from an image's provenance, checked."""

    prompt: str
    seed: int
    model_sha256: str
    family: str
    options: dict[str, Any]  # the options it records (checked by the family's Options)
    inputs: dict[str, str]  # input name -> the sha256 of the content it was drawn from


# field -> the JSON types it may hold (bool is excluded from int); the family's Options then
# judge the option values, as they do for every other caller.
REPLAY_FIELDS: dict[str, tuple[type, ...]] = {"prompt": (str,), "seed": (int,),
                                              "model_sha256": (str,), "family": (str,)}
OPTIONAL_FIELDS = {"family": "diffusion"}  # written by every gambar version, but be lenient
_SHA256 = re.compile(r"[0-9a-f]{64}")


def replay_settings(prov: dict[str, Any], where: str | Path) -> Replay:
    """Check the fields of one image's provenance (`read_provenance`) for a replay."""
    from gambar.registry import options_class

    if "prompt" not in prov and "grid_of" in prov:
        raise InvalidInputError(f"{where} is a grid of several images, not one; replay one of "
                                "the images gambar wrote beside it")
    if "prompt" not in prov and "sheet_of" in prov:  # a sheet's cells were never files
        raise InvalidInputError(f"{where} is a sample sheet of several images, not one; "
                                f"`gambar info {where}` shows each cell's prompt and seed to "
                                "draw it again with `gambar generate`")
    values = {**OPTIONAL_FIELDS, **prov}
    for name, types in REPLAY_FIELDS.items():
        if name not in values:
            raise InvalidInputError(f"{where}: its provenance lacks {name!r}; it cannot be "
                                    "replayed")
        _check_type(values[name], types, f"{where}: its provenance field {name!r}")
    cls = options_class(values["family"])
    options = cls.from_provenance(prov, where=str(where))  # checked like any request
    recorded = {name: getattr(options, name) for name in cls.recorded(prov, where=str(where))}
    inputs = values.get("inputs", {})
    if not isinstance(inputs, dict) or not all(
            isinstance(v, str) and _SHA256.fullmatch(v) for v in inputs.values()):
        raise InvalidInputError(f"{where}: its provenance field 'inputs' must map input names "
                                "to sha256 digests")
    return Replay(values["prompt"], values["seed"], values["model_sha256"], values["family"],
                  recorded, dict(inputs))


def _check_type(value: Any, types: tuple[type, ...], what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, types):
        wanted = " or ".join(TYPE_NAMES[t] for t in types)
        raise InvalidInputError(f"{what} must be {wanted}, not {_shown(value)[:40]}")


JSON_NAMES = {list: "a JSON list", str: "a JSON string", int: "a number", float: "a number",
              bool: "true or false", type(None): "null"}
TYPE_NAMES = {str: "text", int: "a whole number", float: "a number", dict: "an object"}
