"""The glyph dataset: captions, coverage, drawing (not clipped, case kept), splits, builds."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from gambar.data.glyphs import (
    CHARACTERS,
    FONT_DIR,
    FONTS,
    build_glyphs,
    glyph_captions,
    glyph_items,
    glyph_mask,
    render_glyph,
)
from gambar.data.loading import load_dataset
from gambar.errors import InvalidInputError

FONT = {f.slug: f for f in FONTS}


@pytest.fixture(scope="module")
def items():
    missing = sorted({f.package for f in FONTS if not (FONT_DIR / f.file).is_file()})
    if missing:
        message = f"fonts missing: apt-get install -y {' '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message + " (.ci/run must install them)")
        pytest.skip(message)
    return glyph_items()


def test_captions_english_and_indonesian():
    en, ids = glyph_captions("g", FONT["dejavu-serif-bold"])
    assert en[0] == "the lowercase letter g in a bold serif font"
    assert ids[0] == "huruf g kecil dengan huruf tebal berkait"
    en, ids = glyph_captions("Q", FONT["liberation-sans-italic"])
    assert en[0] == "the uppercase letter Q in an italic sans-serif font"
    assert ids[0] == "huruf Q besar dengan huruf miring tanpa kait"
    en, ids = glyph_captions("7", FONT["dejavu-sans-mono-bold-italic"])
    assert en[0] == "the digit 7 in a bold italic monospace font"
    assert ids == ("angka 7 dengan huruf tebal miring monospasi",
                   "angka 7 dalam fon DejaVu Sans Mono Bold Italic")
    en, _ = glyph_captions("&", FONT["liberation-serif"])
    assert en == ("the ampersand in a serif font", "ampersand, serif",
                  "the ampersand in Liberation Serif")


def test_every_font_and_style_is_there_with_its_coverage(items):
    per_font = defaultdict(set)
    for it in items:
        per_font[it.font.slug].add(it.char)
    assert set(per_font) == set(FONT)  # 3 kinds x 2 families x 4 styles
    assert len(FONTS) == 24
    for chars in per_font.values():
        assert set("abcxyzABCXYZ0189&@") <= chars
    assert "\u2605" not in per_font["dejavu-serif"]  # DejaVu Serif has no star: left out
    assert "\u2605" in per_font["dejavu-sans"]
    assert 2200 < len(items) <= len(FONTS) * len(CHARACTERS)


def test_glyphs_are_centred_not_clipped_and_keep_case(items):
    for font in (FONT["dejavu-serif-bold-italic"], FONT["liberation-mono"],
                 FONT["dejavu-sans-bold"]):
        for char in {it.char for it in items if it.font == font}:
            box = glyph_mask(char, font, 32).getbbox()
            assert box[0] > 0 and box[1] > 0 and box[2] < 32 and box[3] < 32, (char, font)
    font = FONT["dejavu-sans"]
    m = np.asarray(glyph_mask("W", font, 64))
    cols = np.flatnonzero(m.max(axis=0) > 0)
    assert abs((cols[0] + cols[-1]) / 2 - 31.5) <= 1.5
    small, big = glyph_mask("o", font, 64).getbbox(), glyph_mask("O", font, 64).getbbox()
    assert big[3] - big[1] > 1.3 * (small[3] - small[1])  # one size per font: case survives
    assert glyph_mask("p", font, 64).getbbox()[3] > small[3] + 4  # on the baseline
    white = np.asarray(render_glyph("A", font, 32))
    assert white.shape == (32, 32, 3) and white[0, 0].tolist() == [255, 255, 255]
    assert white.min() == 0  # black ink
    clear = np.asarray(render_glyph("A", font, 32, background="transparent"))
    assert clear.shape == (32, 32, 4) and clear[0, 0, 3] == 0 and clear[..., :3].max() == 0


def test_one_description_lies_in_one_split(items):
    splits = defaultdict(set)
    for it in items:
        splits[it.group].add(it.split)
    assert all(len(s) == 1 for s in splits.values())
    pair = [it for it in items if it.char == "g" and it.font.kind == "serif"
            and it.font.bold and not it.font.italic]
    assert {it.font.family for it in pair} == {"DejaVu Serif Bold", "Liberation Serif Bold"}
    assert len({it.split for it in pair}) == 1


def test_build_subset_is_deterministic(items, tmp_path: Path):
    fonts = ["dejavu-sans", "liberation-serif-bold"]
    report = build_glyphs(tmp_path / "a", size=24, limit=30, fonts=fonts)
    build_glyphs(tmp_path / "b", size=24, limit=30, fonts=fonts)
    for path in sorted((tmp_path / "a").rglob("*")):
        twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
        assert path.is_dir() or path.read_bytes() == twin.read_bytes(), path
    assert sum(report.images.values()) == 30 and report.details == {"DejaVu Sans": 30}
    card = (tmp_path / "a" / "README.md").read_text()
    assert "fonts-dejavu-core" in card and "SIL Open Font License 1.1" in card
    ds = load_dataset(tmp_path / "a", size=24, split="train")
    assert ds.records[0].metadata["font"] == "DejaVu Sans"
    with pytest.raises(InvalidInputError, match="unknown fonts"):
        build_glyphs(tmp_path / "c", fonts=["comic-sans"])


def test_glyphs_on_the_fly(items):
    ds = load_dataset("glyphs", size=16, split="val", limit=4, languages=("id",))
    assert len(ds) == 4
    image, caption, meta = ds[0]
    assert image.shape == (3, 16, 16) and meta["source"] == "glyphs"
    assert caption in meta["captions_id"]
