"""Sample sheets: a labelled grid of prompts (rows) x seeds (columns), for a person to look at.

The default prompts cover what a model card shows: English and Indonesian, every category of the
shapes suite, the held-out (colour, shape) pairs (marked), and a few emoji names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from gambar.data.mix import held_out_pairs
from gambar.pipeline import Generated

LABEL_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # fonts-dejavu-core
DEFAULT_PROMPTS: tuple[str, ...] = (
    "a red circle above a blue square",
    "sebuah lingkaran merah di atas persegi biru",
    "three purple stars",
    "tiga bintang ungu",
    "a large yellow triangle",
    "a small red heart",
    "a green square to the left of a purple heart",
    "hati kuning di sebelah kanan segitiga biru",
    "an orange square",          # held-out pair: never seen in training
    "segitiga merah muda",       # held-out: pink triangle
    "a blue heart and a red circle",  # held-out: blue heart
    "a grinning face",           # emoji names
    "a red apple",
)


@dataclass(frozen=True)
class SheetLayout:
    """Sizes of a sheet: each image scaled `scale` times, a label column `label_width` wide."""

    scale: int = 2
    label_width: int = 330
    pad: int = 4
    font_size: int = 13


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    if LABEL_FONT.exists():
        return ImageFont.truetype(str(LABEL_FONT), size)
    return ImageFont.load_default()


def _wrap(text: str, width: int, draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont
          | ImageFont.FreeTypeFont) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return [*lines, line] if line else lines


def label(prompt: str, images: Sequence[Generated] = ()) -> str:
    """The row label: the prompt, marked when it names a held-out pair, and for a prompt of the
    shapes grammar how many of the row's images the compositional judge accepts."""
    text = f"{prompt}  [held-out]" if held_out_pairs(prompt) else prompt
    if images:
        from gambar.data.prompts import parse_prompt
        from gambar.errors import InvalidInputError
        from gambar.evaluation.compositional import judge

        try:
            scene = parse_prompt(prompt)
        except InvalidInputError:
            return text  # not a shapes prompt (an emoji name): nothing to judge
        right = sum(judge(g.image, scene).correct for g in images)
        text += f"  ({right}/{len(images)} judged right)"
    return text


def compose_sheet(rows: Sequence[Sequence[Generated]], labels: Sequence[str],
                  seeds: Sequence[int], layout: SheetLayout = SheetLayout()) -> Image.Image:
    """rows[i][j] = image of prompt i with seed j; labels on the left, seeds on top."""
    if not rows or len(rows) != len(labels):
        raise ValueError("one label per row, at least one row")
    w, h = rows[0][0].image.size
    w, h = w * layout.scale, h * layout.scale
    pad, top = layout.pad, layout.font_size + 2 * layout.pad
    sheet = Image.new("RGB", (layout.label_width + len(seeds) * (w + pad) + pad,
                              top + len(rows) * (h + pad) + pad), (255, 255, 255))
    draw, font = ImageDraw.Draw(sheet), _font(layout.font_size)
    for j, seed in enumerate(seeds):
        x = layout.label_width + j * (w + pad) + pad
        draw.text((x, pad), f"seed {seed}", fill=(90, 90, 90), font=font)
    for i, (row, text) in enumerate(zip(rows, labels, strict=True)):
        y = top + i * (h + pad)
        lines = _wrap(text, layout.label_width - 2 * pad, draw, font)
        line_h = layout.font_size + 3
        y_text = y + max(0, (h - line_h * len(lines)) // 2)
        for k, line in enumerate(lines):
            draw.text((pad, y_text + k * line_h), line, fill=(20, 20, 20), font=font)
        for j, gen in enumerate(row):
            x = layout.label_width + j * (w + pad) + pad
            # a thin grey frame, so a white image on the white sheet still shows its edge
            draw.rectangle((x - 1, y - 1, x + w, y + h), outline=(200, 200, 200))
            sheet.paste(gen.image.resize((w, h), Image.Resampling.NEAREST), (x, y))
    return sheet
