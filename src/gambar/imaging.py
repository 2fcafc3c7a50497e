"""Small image helpers shared by training grids, the CLI and reports, and the one safe opener.

`open_image` is how gambar decodes an image it did not make (dataset files, webdataset members):
it reads the header, refuses a pixel count over `MAX_IMAGE_PIXELS` before decoding a single row,
and turns whatever a damaged or crafted file raises inside Pillow into a one-line GambarError.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from gambar.errors import CorruptFileError, InvalidInputError

# 8192 x 8192 = 67.1 megapixels: every camera photo up to 61 MP full-frame fits, while one decoded
# RGB copy stays under 200 MB (a 420 KB PNG declaring 12000 x 12000 otherwise takes 1.36 GB).
# Pillow's own limit (89.5 MP, a warning; an error only past 179 MP) is too loose for a 2-core
# machine that decodes in DataLoader workers.
MAX_IMAGE_PIXELS = 8192 * 8192
# The formats of the file extensions datasets may use. Pillow identifies a file by its content, so
# without this list a file named .png could reach any plugin (EPS, for one, runs Ghostscript).
DATASET_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
# What Pillow's decoders raise on damaged or crafted input besides OSError (its own open() catches
# the same set while identifying a file).
DECODE_ERRORS: tuple[type[Exception], ...] = (
    OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, TypeError, KeyError,
    ZeroDivisionError)


class ImageTooLargeError(InvalidInputError):
    """An image declares more pixels than the cap (or trips Pillow's decompression-bomb check)."""


def open_image(source: Path | bytes, where: str, *, max_pixels: int = MAX_IMAGE_PIXELS,
               formats: Sequence[str] = DATASET_FORMATS) -> Image.Image:
    """The fully decoded image in a file or bytes, refused before decoding if it is too large.

    Raises ImageTooLargeError over `max_pixels`, CorruptFileError when it is missing, unreadable
    or not one of `formats`; each message starts with `where: `.
    """
    try:
        # Pillow's own bomb check warns past 89.5 MP (and raises past twice that) at open(); the
        # check below is stricter and names the size, so the warning would only be noise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source if isinstance(source, Path) else io.BytesIO(source),
                            formats=list(formats)) as im:
                width, height = im.size  # from the header: nothing is decoded yet
                if width * height > max_pixels:
                    raise ImageTooLargeError(
                        f"{where}: {width}x{height} = {width * height / 1e6:.1f} megapixels, over "
                        f"the {max_pixels / 1e6:.1f}-megapixel limit; downscale it")
                im.load()  # decode now: a truncated file only fails here, not in open()
                return im.copy()
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"{where}: over the {max_pixels / 1e6:.1f}-megapixel limit ({exc})") from None
    except UnidentifiedImageError:  # its message names a BytesIO object: useless to a user
        raise CorruptFileError(
            f"{where}: not an image in a format gambar reads ({', '.join(formats)})") from None
    except DECODE_ERRORS as exc:
        raise CorruptFileError(f"{where}: unreadable image ({exc})") from None


def make_grid(images: Sequence[Image.Image], cols: int, pad: int = 2,
              scale: int = 1) -> Image.Image:
    """Tile equally sized images row by row on a light grey canvas (so white images show)."""
    if not images:
        raise ValueError("no images to tile")
    w, h = images[0].size
    w, h = w * scale, h * scale
    rows = -(-len(images) // cols)
    grid = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), (200, 200, 200))
    for i, im in enumerate(images):
        if scale != 1:
            im = im.resize((w, h), Image.Resampling.NEAREST)
        grid.paste(im.convert("RGB"), (pad + (i % cols) * (w + pad), pad + (i // cols) * (h + pad)))
    return grid
