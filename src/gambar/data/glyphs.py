"""The glyph dataset: letters, digits and symbols in serif, sans-serif and monospace fonts, in four
styles each, captioned in English and Indonesian ("the lowercase letter g in a bold serif font",
"huruf g kecil dengan huruf tebal berkait"): a second domain with exact ground truth.

Fonts come from Debian packages: DejaVu (fonts-dejavu-core, fonts-dejavu-extra; Bitstream Vera
licence) and Liberation 2 (fonts-liberation2; SIL OFL 1.1). Glyphs are drawn black at one size per
font (so "o" stays smaller than "O"), on the font's baseline with its line box centred vertically
(so "p" hangs lower than "o"), centred horizontally, supersampled 4x and area-averaged.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from gambar.data.emoji import BACKGROUNDS, LANGUAGES, split_of
from gambar.data.formats import Record
from gambar.data.formats.imagefolder import (
    BuildReport,
    ImageFolderWriter,
    card_header,
    package_versions,
)
from gambar.data.loading import check_image_size
from gambar.errors import InvalidInputError

FONT_DIR = Path("/usr/share/fonts/truetype")
SUPERSAMPLE = 4
LINE_FILL = 0.8  # the font's line box (ascent + descent) as a share of the canvas height
MISSING_PROBE = "\U0010fffd"  # a private-use codepoint no font here covers: draws .notdef


@dataclass(frozen=True)
class FontSpec:
    """One font file and how captions describe it."""

    family: str  # "DejaVu Serif Bold Italic"
    kind: str  # "serif" | "sans" | "mono"
    bold: bool
    italic: bool  # italic or oblique
    file: str  # relative to FONT_DIR
    package: str  # the Debian package that ships it

    @property
    def slug(self) -> str:
        """"dejavu-serif-bold-italic": used in file names."""
        return self.family.lower().replace(" ", "-")


def _styles(family: str, kind: str, files: tuple[str, str, str, str],
            packages: tuple[str, str, str, str]) -> list[FontSpec]:
    names = ("", " Bold", " Italic", " Bold Italic")
    return [FontSpec(family + n, kind, "Bold" in n, "Italic" in n, f, p)
            for n, f, p in zip(names, files, packages, strict=True)]


_CORE, _EXTRA, _LIB = "fonts-dejavu-core", "fonts-dejavu-extra", "fonts-liberation2"
FONTS: tuple[FontSpec, ...] = tuple(
    _styles("DejaVu Serif", "serif", tuple(f"dejavu/DejaVuSerif{s}.ttf" for s in (
        "", "-Bold", "-Italic", "-BoldItalic")), (_CORE, _CORE, _EXTRA, _EXTRA))
    + _styles("DejaVu Sans", "sans", tuple(f"dejavu/DejaVuSans{s}.ttf" for s in (
        "", "-Bold", "-Oblique", "-BoldOblique")), (_CORE, _CORE, _EXTRA, _EXTRA))
    + _styles("DejaVu Sans Mono", "mono", tuple(f"dejavu/DejaVuSansMono{s}.ttf" for s in (
        "", "-Bold", "-Oblique", "-BoldOblique")), (_CORE, _CORE, _EXTRA, _EXTRA))
    + [spec for name, kind in (("Serif", "serif"), ("Sans", "sans"), ("Mono", "mono"))
       for spec in _styles(f"Liberation {name}", kind, tuple(
           f"liberation2/Liberation{name}-{s}.ttf" for s in (
               "Regular", "Bold", "Italic", "BoldItalic")), (_LIB,) * 4)]
)

LOWER = "abcdefghijklmnopqrstuvwxyz"
UPPER = LOWER.upper()
DIGITS = "0123456789"
# Symbol -> (English: its Unicode name, lower-cased; Indonesian). Unicode's "black" means filled
# and "white" outlined; "black circle" (●) is a held-out pair that training mixes filter out.
SYMBOLS: dict[str, tuple[str, str]] = {
    "&": ("ampersand", "tanda dan"), "@": ("at sign", "tanda at"),
    "#": ("number sign", "tanda pagar"), "$": ("dollar sign", "tanda dolar"),
    "%": ("percent sign", "tanda persen"), "?": ("question mark", "tanda tanya"),
    "!": ("exclamation mark", "tanda seru"), "+": ("plus sign", "tanda tambah"),
    "=": ("equals sign", "tanda sama dengan"), "*": ("asterisk", "tanda bintang"),
    "/": ("slash", "garis miring"), "(": ("left parenthesis", "kurung buka"),
    ")": ("right parenthesis", "kurung tutup"), "<": ("less-than sign", "tanda lebih kecil"),
    ">": ("greater-than sign", "tanda lebih besar"), "€": ("euro sign", "tanda euro"),
    "£": ("pound sign", "tanda pound"), "¥": ("yen sign", "tanda yen"),
    "§": ("section sign", "tanda pasal"), "©": ("copyright sign", "tanda hak cipta"),
    "°": ("degree sign", "tanda derajat"), "±": ("plus-minus sign", "tanda plus-minus"),
    "×": ("multiplication sign", "tanda kali"), "÷": ("division sign", "tanda bagi"),
    "←": ("leftwards arrow", "panah ke kiri"), "→": ("rightwards arrow", "panah ke kanan"),
    "↑": ("upwards arrow", "panah ke atas"), "↓": ("downwards arrow", "panah ke bawah"),
    "★": ("black star", "bintang hitam"), "☆": ("white star", "bintang putih"),
    "●": ("black circle", "lingkaran hitam"), "○": ("white circle", "lingkaran putih"),
    "■": ("black square", "persegi hitam"), "□": ("white square", "persegi putih"),
    "▲": ("black up-pointing triangle", "segitiga hitam menghadap ke atas"),
    "△": ("white up-pointing triangle", "segitiga putih menghadap ke atas"),
    "♥": ("black heart suit", "simbol hati hitam"), "♦": ("black diamond suit", "wajik hitam"),
    "♠": ("black spade suit", "sekop hitam"), "♣": ("black club suit", "keriting hitam"),
    "♪": ("eighth note", "not musik"), "✓": ("check mark", "tanda centang"),
}
CHARACTERS = LOWER + UPPER + DIGITS + "".join(SYMBOLS)
KIND_EN = {"serif": "serif", "sans": "sans-serif", "mono": "monospace"}
KIND_ID = {"serif": "berkait", "sans": "tanpa kait", "mono": "monospasi"}


@dataclass(frozen=True)
class GlyphItem:
    """One character in one font, with its captions."""

    char: str
    font: FontSpec
    captions_en: tuple[str, ...]
    captions_id: tuple[str, ...]

    @property
    def category(self) -> str:
        """"lowercase" | "uppercase" | "digit" | "symbol"."""
        c = self.char
        return "lowercase" if c in LOWER else "uppercase" if c in UPPER else \
            "digit" if c in DIGITS else "symbol"

    @property
    def char_name(self) -> str:
        """English name: "lowercase letter g", "digit 7", "ampersand"."""
        c = self.char
        if c in SYMBOLS:
            return SYMBOLS[c][0]
        return f"digit {c}" if c in DIGITS else f"{self.category} letter {c}"

    @property
    def group(self) -> str:
        """Items with the same description (both families of one style): one split only."""
        f = self.font
        return f"{ord(self.char):04X}|{f.kind}|{int(f.bold)}|{int(f.italic)}"

    @property
    def split(self) -> str:
        """train / val / test (80/10/10) by a hash of the description: test captions are unseen."""
        return split_of(self.group)

    @property
    def file_name(self) -> str:
        """"dejavu-serif-bold-0067.png"."""
        return f"{self.font.slug}-{ord(self.char):04X}.png"


def _style_en(font: FontSpec) -> str:
    """"bold italic serif" (no adjectives for the regular upright style)."""
    words = (["bold"] if font.bold else []) + (["italic"] if font.italic else [])
    return " ".join([*words, KIND_EN[font.kind]])


def glyph_captions(char: str, font: FontSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(English, Indonesian) captions of a character in a font."""
    style = _style_en(font)
    article = "an" if style[0] in "aeiou" else "a"
    if char in SYMBOLS:
        subject, short, subject_id = f"the {SYMBOLS[char][0]}", SYMBOLS[char][0], SYMBOLS[char][1]
    elif char in DIGITS:
        subject, short, subject_id = f"the digit {char}", f"digit {char}", f"angka {char}"
    else:
        case = "lowercase" if char in LOWER else "uppercase"
        subject, short = f"the {case} letter {char}", f"{case} {char}"
        subject_id = f"huruf {char} kecil" if char in LOWER else f"huruf {char} besar"
    en = (f"{subject} in {article} {style} font", f"{short}, {style}",
          f"{subject} in {font.family}")
    adjectives_id = (["tebal"] if font.bold else []) + (["miring"] if font.italic else [])
    style_id = " ".join(["huruf", *adjectives_id, KIND_ID[font.kind]])
    ids = (f"{subject_id} dengan {style_id}", f"{subject_id} dalam fon {font.family}")
    return en, ids


@cache
def _font(path: Path, line_px: int) -> tuple[ImageFont.FreeTypeFont, int, int]:
    """(font, ascent, descent) with its line box `line_px` tall; basic layout: single glyphs."""
    probe = ImageFont.truetype(str(path), 1000, layout_engine=ImageFont.Layout.BASIC)
    ascent, descent = probe.getmetrics()
    font = ImageFont.truetype(str(path), round(1000 * line_px / (ascent + descent)),
                              layout_engine=ImageFont.Layout.BASIC)
    a, d = font.getmetrics()
    return font, a, d


def font_path(font: FontSpec, font_dir: Path = FONT_DIR) -> Path:
    """The font's file, or an error that says which Debian package to install."""
    path = font_dir / font.file
    if not path.is_file():
        raise InvalidInputError(f"{path} is missing; install it with: "
                                f"apt-get install -y {font.package}")
    return path


def glyph_mask(char: str, font: FontSpec, size: int, font_dir: Path = FONT_DIR) -> Image.Image:
    """Coverage of the glyph ("L", size x size, 255 = ink), drawn 4x larger and area-averaged."""
    big = size * SUPERSAMPLE
    face, ascent, descent = _font(font_path(font, font_dir), round(LINE_FILL * big))
    x0, _, x1, _ = face.getbbox(char, anchor="ls")
    baseline = round((big - ascent - descent) / 2 + ascent)
    canvas = Image.new("L", (big, big), 0)
    ImageDraw.Draw(canvas).text((round(big / 2 - (x0 + x1) / 2), baseline), char, font=face,
                                fill=255, anchor="ls")
    return canvas.resize((size, size), Image.Resampling.BOX)


def render_glyph(char: str, font: FontSpec, size: int = 64, background: str = "white",
                 font_dir: Path = FONT_DIR) -> Image.Image:
    """Black glyph on white (RGB) or on transparent (RGBA), size x size."""
    if background not in BACKGROUNDS:
        raise InvalidInputError(f"background must be one of {BACKGROUNDS}, not {background!r}")
    mask = glyph_mask(char, font, size, font_dir)
    if background == "white":
        return Image.eval(mask, lambda v: 255 - v).convert("RGB")
    black = Image.new("RGBA", mask.size, (0, 0, 0, 0))
    black.putalpha(mask)
    return black


def covers(char: str, font: FontSpec, font_dir: Path = FONT_DIR) -> bool:
    """Whether the font has a glyph for `char` (it draws neither nothing nor its .notdef box)."""
    mask = glyph_mask(char, font, 32, font_dir)
    return mask.getbbox() is not None and \
        mask.tobytes() != glyph_mask(MISSING_PROBE, font, 32, font_dir).tobytes()


@cache
def glyph_items(fonts: tuple[FontSpec, ...] = FONTS, font_dir: Path = FONT_DIR
                ) -> tuple[GlyphItem, ...]:
    """Every character of CHARACTERS that each font covers, font by font."""
    items = []
    for font in fonts:
        for char in CHARACTERS:
            if covers(char, font, font_dir):
                items.append(GlyphItem(char, font, *glyph_captions(char, font)))
    return tuple(items)


def _select(fonts: Sequence[str] | None) -> tuple[FontSpec, ...]:
    """FONTS, or those whose slug or family is in `fonts`."""
    if fonts is None:
        return FONTS
    chosen = tuple(f for f in FONTS if f.slug in fonts or f.family in fonts)
    unknown = set(fonts) - {f.slug for f in chosen} - {f.family for f in chosen}
    if unknown or not chosen:
        raise InvalidInputError(f"unknown fonts {sorted(unknown)}; choose from "
                                f"{', '.join(f.slug for f in FONTS)}")
    return chosen


def _row(item: GlyphItem) -> dict[str, object]:
    """The metadata.jsonl fields of an item (after file_name)."""
    f = item.font
    return {"text": item.captions_en[0], "captions": [*item.captions_en, *item.captions_id],
            "captions_en": list(item.captions_en), "captions_id": list(item.captions_id),
            "char": item.char, "codepoint": f"U+{ord(item.char):04X}",
            "category": item.category, "char_name": item.char_name, "font": f.family,
            "font_file": Path(f.file).name, "font_kind": f.kind,
            "weight": "bold" if f.bold else "regular",
            "slant": "italic" if f.italic else "upright", "source": "glyphs"}


def glyph_records(split: str = "train", size: int = 64, languages: Sequence[str] = LANGUAGES,
                  background: str = "white", fonts: Sequence[str] | None = None) -> list[Record]:
    """Records of one split ("all" for every glyph), each drawn when it is read."""
    bad = set(languages) - set(LANGUAGES)
    if bad or not languages:
        raise InvalidInputError(f"languages must be a subset of {LANGUAGES}, got {languages}")
    return [Record(partial(render_glyph, it.char, it.font, size, background),
                   (it.captions_en if "en" in languages else ())
                   + (it.captions_id if "id" in languages else ()),
                   _row(it) | {"name": it.file_name})
            for it in glyph_items(_select(fonts)) if split in ("all", it.split)]


def build_glyphs(out: Path, size: int = 64, background: str = "white", limit: int | None = None,
                 overwrite: bool = False, fonts: Sequence[str] | None = None) -> BuildReport:
    """Write the glyph dataset (imagefolder + metadata.jsonl + README card) to `out`."""
    start = time.perf_counter()
    check_image_size(size)
    if background not in BACKGROUNDS:
        raise InvalidInputError(f"background must be one of {BACKGROUNDS}, not {background!r}")
    chosen = _select(fonts)
    items = glyph_items(chosen)
    left_out = tuple(f"{c} in {f.family}" for f in chosen for c in CHARACTERS
                     if not any(it.char == c and it.font == f for it in items))
    if limit is not None:
        items = items[:limit]
    images: dict[str, int] = {}
    groups: dict[str, set[str]] = {}
    per_font: dict[str, int] = {}
    with ImageFolderWriter(Path(out), overwrite=overwrite) as writer:
        for it in items:
            writer.add(it.split, it.file_name, render_glyph(it.char, it.font, size, background),
                       _row(it))
            images[it.split] = images.get(it.split, 0) + 1
            groups.setdefault(it.split, set()).add(it.group)
            per_font[it.font.family] = per_font.get(it.font.family, 0) + 1
        counts = {s: len(g) for s, g in groups.items()}
        writer.finish(glyph_card(images, counts, per_font, size, background, chosen, left_out))
    return BuildReport(Path(out), images, counts, time.perf_counter() - start, left_out, per_font)


def glyph_card(images: dict[str, int], groups: dict[str, int], per_font: dict[str, int],
               size: int, background: str, fonts: Sequence[FontSpec],
               left_out: Sequence[str]) -> str:
    """The dataset card (README.md): contents, fonts and licences, fields, splits."""
    from gambar import __version__

    packages = sorted({f.package for f in fonts})
    v = package_versions(packages, ["pillow"])
    total = sum(images.values())
    rows = "\n".join(f"| {s} | {images.get(s, 0)} | {groups.get(s, 0)} |"
                     for s in ("train", "val", "test"))
    font_rows = "\n".join(f"| {f.family} | `{f.file}` | {f.package} {v[f.package]} | "
                          f"{per_font.get(f.family, 0)} |" for f in fonts)
    licences = {_CORE: "Bitstream Vera licence (with DejaVu changes: public domain)",
                _EXTRA: "Bitstream Vera licence (with DejaVu changes: public domain)",
                _LIB: "SIL Open Font License 1.1"}
    lic = "\n".join(f"- `{p}`: {licences.get(p, 'see /usr/share/doc/' + p + '/copyright')}"
                    for p in packages)
    return card_header("gambar glyphs", "ofl-1.1 and bitstream-vera (fonts)", LANGUAGES,
                       total) + f"""
# gambar glyphs: {total} letters, digits and symbols at {size}x{size}, in {len(fonts)} fonts

Black glyphs on a {background} background, captioned in English and Indonesian ("the lowercase
letter g in a bold serif font", "huruf g kecil dengan huruf tebal berkait"), with exact ground
truth (character, font, weight, slant). Built offline by gambar {__version__} with Pillow
{v["pillow"]}.

| split | images | descriptions |
|---|---|---|
{rows}

A *description* is (character, serif/sans-serif/monospace, bold, italic): the DejaVu and the
Liberation glyph of one description lie in the same split, chosen by a hash (80/10/10), so the
captions of the test split never occur in training.

## How it is drawn
Each font at one size (its line box, ascent + descent, fills {LINE_FILL:.0%} of the height), the
glyph on the font's baseline with the line box centred vertically and the ink centred
horizontally; drawn {SUPERSAMPLE}x larger and area-averaged. So letter case and position survive
("o" vs "O", "p" lower than "o").

## Fonts and licences
| font | file | Debian package | images |
|---|---|---|---|
{font_rows}

{lic}

## Fields (metadata.jsonl in each split folder: train/, validation/ (gambar's "val"), test/)
`file_name`, `text` (the first English caption), `captions` (all), `captions_en`, `captions_id`,
`char`, `codepoint`, `category` (lowercase/uppercase/digit/symbol), `char_name`, `font`,
`font_file`, `font_kind`, `weight`, `slant`, `source`.

## Held-out combinations
"black circle" (●) names a held-out pair of the shapes domain; it is kept here, and
`gambar.data.mix` removes it from any training mix.

## Left out (the font has no glyph)
{", ".join(left_out) if left_out else "none"}
"""
