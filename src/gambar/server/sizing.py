"""Output sizes asked for by the compatible APIs (OpenAI "512x512", A1111 width/height).

A size the model draws (its native size, or one its cascade's super-resolution stages reach:
compat.drawing_size) is drawn; what is left is resized with Lanczos, and responses and
provenance say so. Drawing the whole image at a larger size with the base network instead (it
is convolutional) gives tiled, unrelated shapes on a model trained at one size, which would
silently change what the prompt asks for.
"""

from __future__ import annotations

import re

from PIL import Image

from gambar.errors import InvalidInputError, shown

SIZE = re.compile(r"\s*([0-9]{1,6})\s*[xX]\s*([0-9]{1,6})\s*", re.ASCII)
MAX_OUTPUT_SIZE = 1024  # the largest square side the compatible APIs return
RESIZE_METHOD = "lanczos (PIL), after drawing at the nearest size the model draws"


def square_side(width: int, height: int) -> int:
    """The side of a square size; InvalidInputError for non-square or out-of-range sizes."""
    if width != height:
        raise InvalidInputError(
            f"only square images can be made; {shown(width)}x{shown(height)} is not square "
            "(gambar models draw squares; ask for e.g. 512x512)")
    if not 1 <= width <= MAX_OUTPUT_SIZE:
        raise InvalidInputError(
            f"image size must be between 1 and {MAX_OUTPUT_SIZE} pixels, not {shown(width)}")
    return width


def parse_size(text: str | None, native: int) -> int:
    """'512x512' -> 512; None or 'auto' -> the model's native side."""
    if text is None or text == "auto":
        return native
    # ASCII digits only: str.isdigit() also accepts '²' and '١', which int() then refuses.
    match = SIZE.fullmatch(text)
    if match is None:
        raise InvalidInputError(f"size must look like 512x512 or be 'auto', not {shown(text)}")
    return square_side(int(match[1]), int(match[2]))


def output_size(native: int, side: int) -> int | None:
    """The side to resize to after drawing at `native`; None when `side` is native."""
    return None if side == native else side


def resize(image: Image.Image, side: int) -> Image.Image:
    """Resize a drawn image to side x side with Lanczos."""
    return image.resize((side, side), Image.Resampling.LANCZOS)


def resize_info(native: int, side: int | None) -> dict[str, str]:
    """What responses say about how the size was made."""
    if side is None or side == native:
        return {"drawn_at": f"{native}x{native}", "resized_to": "", "resize": "none"}
    return {"drawn_at": f"{native}x{native}", "resized_to": f"{side}x{side}",
            "resize": RESIZE_METHOD}
