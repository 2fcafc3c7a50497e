"""Judging a layout on its own, so that a miss is attributed to the stage that made it.

A layout (a list of {"phrase", "box"}) is drawn as the spec's renderer would draw it: each box
holds the shape its phrase names, in the colour it names, as large as the box. The shapes judge
then checks that drawing against the prompt. A layout that passes is one an ideal image stage
could draw correctly; a generated image that fails over a passing layout is the image stage's
miss. Reading the phrase here is evaluation, not generation (the model never sees this parse).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image, ImageDraw

from gambar.data.mix import named_pairs
from gambar.data.shapes_draw import SUPERSAMPLE, draw_shape
from gambar.data.shapes_vocab import BACKGROUND, COLORS


def render_layout(layout: Sequence[Mapping[str, Any]], size: int = 64) -> Image.Image:
    """The layout drawn with exact shapes; a phrase naming no (colour, shape) draws nothing."""
    f = SUPERSAMPLE
    canvas = Image.new("RGB", (size * f, size * f), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for item in layout:
        pairs = sorted(named_pairs(str(item.get("phrase", ""))))
        if len(pairs) != 1:  # none or ambiguous: an ideal image stage could not know either
            continue
        ((color, shape),) = pairs
        x0, y0, x1, y1 = (float(v) * size for v in item["box"])
        centre, side = ((x0 + x1) / 2, (y0 + y1) / 2), max(x1 - x0, y1 - y0)
        draw_shape(draw, shape, centre, side - 1 / f, fill=COLORS[color], scale=f)
    return canvas.resize((size, size), Image.Resampling.BOX)
