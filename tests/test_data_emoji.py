"""The emoji dataset: drawing, names, variant groups and splits, deterministic builds, card."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from gambar.data.emoji import (
    CELL,
    EMOJI_FONT,
    EMOJI_TEST,
    build_emoji,
    draw_full,
    emoji_font,
    emoji_items,
    left_out,
    readable_name,
    render_emoji,
    variant_key,
    with_article,
)
from gambar.data.loading import CaptionedImages, load_dataset
from gambar.errors import InvalidInputError


def _need(path: Path, package: str) -> None:
    """Skip where a Debian package is absent, except in CI, which must install it."""
    if not path.is_file():
        message = f"{path} is missing: apt-get install -y {package}"
        if os.environ.get("CI"):
            pytest.fail(message + " (.ci/run must install it)")
        pytest.skip(message)


@pytest.fixture(scope="module")
def items():
    _need(EMOJI_FONT, "fonts-noto-color-emoji")
    _need(EMOJI_TEST, "unicode-data")
    return {it.emoji: it for it in emoji_items()}


def test_catalog_size_and_what_is_left_out(items):
    # Noto Color Emoji 2.042 draws Emoji 15.1: about 3,700 fully-qualified emoji.
    assert 3500 < len(items) < 4200
    gone = left_out()
    assert "\U0001f1e8\U0001f1f6" in gone  # Sark (Emoji 16): the font only has its "?" flag
    assert not set(gone) & set(items)


def test_names_and_captions_in_both_languages(items):
    apple = items["\U0001f34e"]
    assert apple.captions_en[:2] == ("a red apple", "red apple")
    assert "a fruit" in apple.captions_en
    assert apple.captions_id == ("apel merah", "buah")
    assert apple.group == "Food & Drink" and apple.subgroup == "food-fruit"
    flag = items["\U0001f1ee\U0001f1e9"]
    assert "the flag of Indonesia" in flag.captions_en and "bendera indonesia" in flag.captions_id
    thumbs = items["\U0001f44d\U0001f3fd"]
    assert thumbs.captions_en[0] == "a thumbs up with medium skin tone"
    # Emoji newer than emoji-test.txt 15.0 take their first character's subgroup.
    phoenix = items["\U0001f426\u200d\U0001f525"]
    assert phoenix.subgroup == "animal-bird" and phoenix.version == 15.1


def test_caption_wording_rules():
    assert with_article("ice cream") == "an ice cream"
    assert with_article("unicorn") == "a unicorn"
    assert with_article("chopsticks") is None and with_article("Japan") is None
    assert with_article("cactus") == "a cactus"
    assert readable_name("handshake light skin tone medium skin tone") == \
        "handshake with light and medium skin tones"


def test_variants_share_a_group_and_a_split(items):
    groups = defaultdict(set)
    for it in items.values():
        groups[it.variant_group].add(it.split)
    assert all(len(splits) == 1 for splits in groups.values())
    same = ["\U0001f44d", "\U0001f44d\U0001f3fb", "\U0001f44d\U0001f3ff"]  # thumbs up, tones
    assert len({items[e].variant_group for e in same}) == 1
    health = ["\U0001f9d1\u200d\u2695\ufe0f", "\U0001f468\u200d\u2695\ufe0f",
              "\U0001f469\U0001f3fe\u200d\u2695\ufe0f"]  # health worker: person, man, woman
    assert len({items[e].variant_group for e in health}) == 1
    running = ["\U0001f3c3", "\U0001f3c3\u200d\u2642\ufe0f", "\U0001f3c3\u200d\u27a1\ufe0f"]
    assert len({items[e].variant_group for e in running}) == 1
    assert variant_key("\U0001f468\u200d\U0001f9b0") == "\U0001f9d1"  # man: red hair -> person
    assert items["\U0001f34e"].variant_group != items["\U0001f34f"].variant_group
    counts = defaultdict(int)
    for it in items.values():
        counts[it.split] += 1
    assert counts["train"] > 0.7 * len(items) and counts["val"] > 0 and counts["test"] > 0


def test_no_emoji_is_clipped(items):
    font = emoji_font()
    for e in list(items)[::10]:
        x0, y0, x1, y1 = draw_full(e, font).getchannel("A").getbbox()
        assert x0 > 0 and y0 > 0 and x1 < CELL and y1 < CELL, e


def test_render_white_and_transparent(items):
    white = render_emoji("\U0001f34e", 64)
    a = np.asarray(white)
    assert white.size == (64, 64) and white.mode == "RGB"
    assert a[0].min() > 240 and a[:, 0].min() > 240  # a white margin all round
    ink = np.argwhere(a.min(axis=2) < 200)
    centre = ink.mean(axis=0)
    assert abs(centre[0] - 32) < 6 and abs(centre[1] - 32) < 6
    clear = render_emoji("\U0001f34e", 32, background="transparent")
    alpha = np.asarray(clear)[:, :, 3]
    assert clear.mode == "RGBA" and alpha[0, 0] == 0 and alpha[16, 16] == 255
    with pytest.raises(InvalidInputError, match="background"):
        render_emoji("\U0001f34e", 32, background="green")


def test_build_subset_is_deterministic_and_loadable(items, tmp_path: Path):
    a = build_emoji(tmp_path / "a", size=32, limit=12)
    build_emoji(tmp_path / "b", size=32, limit=12)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*"))
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*"))
    for f in files:
        if (tmp_path / "a" / f).is_file():
            assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert sum(a.images.values()) == 12
    card = (tmp_path / "a" / "README.md").read_text()
    assert "SIL Open Font License 1.1" in card and "BSD-3-Clause" in card
    assert "| train |" in card and "gambar data build" in card
    row = json.loads((tmp_path / "a" / "train" / "metadata.jsonl").read_text().splitlines()[0])
    assert {"file_name", "text", "captions", "emoji", "variant_group"} <= set(row)
    ds = load_dataset(tmp_path / "a", size=16, split="train")
    assert isinstance(ds, CaptionedImages) and len(ds) == a.images["train"]
    assert ds[0][0].shape == (3, 16, 16)
    with pytest.raises(InvalidInputError, match="already exists"):
        build_emoji(tmp_path / "a", size=32, limit=3)
    build_emoji(tmp_path / "a", size=32, limit=3, overwrite=True)
    assert len(list((tmp_path / "a").rglob("*.png"))) == 3


def test_drawn_on_the_fly_equals_built(items, tmp_path: Path):
    build_emoji(tmp_path / "e", size=32, limit=5)
    built = load_dataset(tmp_path / "e", size=32, split="train")
    live = load_dataset("emoji", size=32, split="train", limit=len(built))
    assert [r.metadata["emoji"] for r in live.records] == \
        [r.metadata["emoji"] for r in built.records]
    assert np.array_equal(built[0][0].numpy(), live[0][0].numpy())
    english = load_dataset("emoji", size=32, split="test", limit=3, languages=("en",))
    assert all(c == records_c for r in english.records for c, records_c in
               zip(r.captions, items[r.metadata["emoji"]].captions_en, strict=True))


def test_huggingface_datasets_loads_a_built_dataset(items, tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    build_emoji(tmp_path / "e", size=16, limit=10)
    loaded = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "e"),
                                   cache_dir=str(tmp_path / "cache"))
    assert sum(len(s) for s in loaded.values()) == 10
    first = next(iter(loaded.values()))[0]
    assert first["image"].size == (16, 16) and first["text"]
