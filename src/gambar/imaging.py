"""Small image helpers shared by training grids, the CLI and reports."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image


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
