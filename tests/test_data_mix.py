"""Training mixes honour the held-out (colour, shape) pairs of ../shared/shapes-spec.md."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from gambar.data.emoji import EMOJI_FONT, EMOJI_TEST, emoji_records
from gambar.data.formats.webdataset import WebDataset
from gambar.data.glyphs import FONT_DIR, FONTS, glyph_records
from gambar.data.loading import CaptionedImages, load_dataset
from gambar.data.mix import (
    TrainingMix,
    held_out_pairs,
    item_key,
    named_pairs,
    names_held_out,
    recipe_data,
    recipe_mix,
    without_held_out,
)
from gambar.data.shapes import ShapesStream
from gambar.data.shapes_vocab import HELD_OUT
from gambar.errors import InvalidInputError


@pytest.mark.parametrize("text, pairs", [
    ("blue heart", {("blue", "heart")}),
    ("a light blue heart", {("blue", "heart")}),
    ("large yellow diamond", {("yellow", "diamond")}),
    ("black circle", {("black", "circle")}),
    ("black circle for record", {("black", "circle")}),
    ("the black circle in a bold serif font", {("black", "circle")}),
    ("lingkaran hitam", {("black", "circle")}),
    ("wajik kuning besar", {("yellow", "diamond")}),
    ("persegi oranye", {("orange", "square")}),
    ("hati biru", {("blue", "heart")}),
    ("segitiga merah muda", {("pink", "triangle")}),
    ("a Pink Triangle!", {("pink", "triangle")}),
    ("two green stars", {("green", "star")}),
    ("a black, medium-small circle", set()),  # a comma separates: not one noun phrase
    ("a black medium small circle", {("black", "circle")}),
    ("a yellow-diamond pattern", {("yellow", "diamond")}),
    ("sebuah belah ketupat kuning", {("yellow", "diamond")}),
])
def test_held_out_pairs_are_found(text, pairs):
    assert held_out_pairs(text) == pairs


@pytest.mark.parametrize("text", [
    "a red circle and a blue square",
    "a blue circle and a black heart",
    "a blue star above a black square",
    "lingkaran biru dan hati hitam",
    "bintang biru di sebelah kiri hati hitam",
    "segitiga merah",  # red, not pink: "merah muda" is matched as one phrase
    "green heart", "orange heart", "blue diamond", "black heart suit", "a pink heart",
    "black square button", "large blue circle", "a heart", "an orange",
    # Spec example 🔶 "large orange diamond": (orange, diamond) is not one of the six pairs.
    "large orange diamond", "wajik oranye besar",
])
def test_other_pairs_are_not_held_out(text):
    assert not names_held_out(text)


def test_pairs_are_read_through_synonyms_and_sizes():
    assert named_pairs("large orange diamond") == {("orange", "diamond")}
    assert named_pairs("wajik oranye kecil") == {("orange", "diamond")}
    assert named_pairs("a black disc and a kotak jingga") == {("black", "circle"),
                                                             ("orange", "square")}
    assert held_out_pairs("large orange diamond", pairs={("orange", "diamond")}) == \
        {("orange", "diamond")}


def test_every_held_out_pair_is_caught_in_both_languages():
    from gambar.data.shapes_vocab import COLORS_ID, SHAPES_ID

    for color, shape in HELD_OUT:
        assert held_out_pairs(f"a {color} {shape}") == {(color, shape)}
        assert held_out_pairs(f"{SHAPES_ID[shape]} {COLORS_ID[color]}") == {(color, shape)}


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, format="PNG")
    return buf.getvalue()


def _folder(root: Path) -> Path:
    """An imagefolder whose captions name held-out pairs in several ways."""
    captions = {
        "0.png": ["a photo of a sailing boat"],
        "1.png": ["a large yellow diamond"],
        "2.png": ["a red kite", "lingkaran hitam di atas meja"],  # one of its captions names one
        "3.png": ["a green star sticker"],
        "4.png": ["a tree in a field"],
    }
    root.mkdir()
    for name in captions:
        (root / name).write_bytes(_png((10, 200, 10)))
    (root / "metadata.jsonl").write_text(
        "".join(json.dumps({"file_name": n, "captions": c}) + "\n" for n, c in captions.items()))
    return root


def test_without_held_out_drops_items_by_any_caption(tmp_path: Path):
    ds = load_dataset(_folder(tmp_path / "f"), size=16)
    kept, removed = without_held_out(ds)
    assert sorted(Path(p).name for p in removed) == ["1.png", "2.png", "3.png"]
    assert [r.metadata["file_name"] for r in kept.records] == ["0.png", "4.png"]


def _need_fonts() -> None:
    if not (EMOJI_FONT.is_file() and EMOJI_TEST.is_file()
            and all((FONT_DIR / f.file).is_file() for f in FONTS[:4])):
        pytest.skip("emoji or glyph fonts not installed")


def test_training_mix_never_shows_a_held_out_pair(tmp_path: Path):
    _need_fonts()
    # The emoji and glyphs that name held-out pairs, among others that do not.
    wanted = {"blue heart", "black circle", "orange square", "large orange diamond",
              "small orange diamond", "light blue heart", "green heart", "red apple",
              "black heart", "blue square"}
    emoji = CaptionedImages([r for r in emoji_records("all", 16)
                             if r.metadata["name"] in wanted], 16, name="emoji")
    assert len(emoji) == len(wanted)
    glyphs = CaptionedImages([r for r in glyph_records("all", 16, fonts=["dejavu-serif"])
                              if r.metadata["char"] in "\u25cf\u25a0\u2665gA"], 16,
                             name="glyphs")
    folder = load_dataset(_folder(tmp_path / "f"), size=16)
    shapes = ShapesStream(seed=1, size=16)
    mix = TrainingMix([(emoji, 1), (glyphs, 1), (folder, 1), (shapes, 1)], seed=3)

    removed = {k.split(":")[1]: v for k, v in mix.removed.items()}
    assert len(removed["emoji"]) == 4  # blue and light blue heart, black circle, orange square
    assert len(removed["glyphs"]) == 1  # ● black circle
    assert len(removed["imagefolder"]) == 3
    for i in range(400):
        image, caption, meta = mix[i]
        texts = [caption, *meta.get("captions", []), str(meta.get("name", ""))]
        assert not names_held_out(texts), (i, texts)
        if meta["source"] == "shapes":
            assert not {(o["color"], o["shape"]) for o in meta["objects"]} & HELD_OUT
        assert image.shape == (3, 16, 16)
    names = {mix[i][2].get("name") for i in range(400)}
    assert {"green heart", "red apple", "black heart", "blue square",
            "large orange diamond"} <= names


def test_mix_is_deterministic_weighted_and_resumable(tmp_path: Path):
    folder = load_dataset(_folder(tmp_path / "f"), size=16)  # 2 items once filtered
    shapes = ShapesStream(seed=0, size=16)
    mix = TrainingMix([(folder, 1), (shapes, 3)], seed=5)
    sources = [mix.locate(i)[0] for i in range(8)]
    assert sources.count(0) == 2 and sources.count(1) == 6
    again = TrainingMix([(load_dataset(tmp_path / "f", size=16), 1), (shapes, 3)], seed=5)
    for i in (0, 3, 17, 40):
        a, b = mix[i], again[i]
        assert torch.equal(a[0], b[0]) and a[1] == b[1]
    # each epoch of a source visits each of its items once
    firsts = [mix[i][2]["file_name"] for i in range(16) if mix.locate(i)[0] == 0]
    assert sorted(firsts[:2]) == ["0.png", "4.png"] and sorted(firsts[2:4]) == ["0.png", "4.png"]
    batches = mix.batches(start=2, batch_size=4)
    first = next(batches)
    assert first["images"].shape == (4, 3, 16, 16)
    assert first["captions"] == [mix[i][1] for i in range(8, 12)]


def test_mix_refuses_sources_that_could_leak(tmp_path: Path):
    with pytest.raises(InvalidInputError, match="allows held-out"):
        TrainingMix([(ShapesStream(seed=0, size=16, allow_held_out=True), 1)])
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in (("k.png", _png((0, 0, 0))), ("k.txt", b"a black circle")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(InvalidInputError, match="cannot be indexed"):
        TrainingMix([(WebDataset([path]), 1)])
    streamed = WebDataset([path], 16, exclude=names_held_out)
    assert list(streamed) == [] and streamed.excluded == 1
    with pytest.raises(InvalidInputError, match="one image size"):
        TrainingMix([(ShapesStream(size=16), 1), (ShapesStream(size=32), 1)])


def test_recipe_mix_reads_builtin_sources_and_folders(tmp_path: Path):
    """`[data] mix = {...}`: "shapes" is the stream, other keys are dataset specs by weight."""
    shapes = ShapesStream(seed=0, size=16, languages=("id",))
    mix = recipe_mix(shapes, {"shapes": 2, "emoji": 1, str(_folder(tmp_path / "f")): 1})
    names = [type(s).__name__ for s in mix.sources]
    assert names == ["ShapesStream", "CaptionedImages", "CaptionedImages"]
    assert mix.weights == [2, 1, 1]
    emoji = [mix[i] for i in range(12) if mix.locate(i)[0] == 1]
    assert len(emoji) == 3 and all(m["source"] == "emoji" for _, _, m in emoji)
    # the stream's languages reach the built-in source: Indonesian captions only
    assert all(c in m["captions_id"] for _, c, m in emoji)
    assert all(not names_held_out(c) for i in range(40) for c in [mix[i][1]])
    with pytest.raises(InvalidInputError, match="empty"):
        recipe_mix(shapes, {})
    with pytest.raises(InvalidInputError):
        recipe_mix(shapes, {"shapes": 0})
    with pytest.raises(InvalidInputError):
        recipe_mix(shapes, {str(tmp_path / "missing"): 1})


def test_item_keys_group_views_of_one_thing():
    skin = {"source": "emoji", "variant_group": "1F44D", "name": "thumbs up: dark skin tone"}
    plain = {"source": "emoji", "variant_group": "1F44D", "name": "thumbs up"}
    assert item_key(skin, "a") == item_key(plain, "b") == "emoji:1F44D"
    serif = {"source": "glyphs", "char_name": "capital letter A", "font": "DejaVu Serif"}
    sans = {"source": "glyphs", "char_name": "capital letter A", "font": "DejaVu Sans"}
    assert item_key(serif, "x") == item_key(sans, "y")
    assert item_key({"source": "coco"}, "a dog") != item_key({"source": "coco"}, "a cat")


def test_category_weights_set_how_often_each_scene_kind_is_drawn():
    """`[data] categories`: a weight-3 category comes ~3x as often as a weight-1 one, weight 0
    never; without the key the stream keeps the spec's uniform mix."""
    from collections import Counter

    data = recipe_data({"categories": {"single": 1, "two_objects": 3, "count": 0}}, 32)
    seen = Counter(data.stream[i].scene.category for i in range(400))
    assert set(seen) == {"single", "two_objects"}
    assert 2.2 < seen["two_objects"] / seen["single"] < 4.0
    assert data.summary["categories"] == {"single": 1, "two_objects": 3, "count": 0}
    plain = recipe_data({}, 32)
    assert sorted(plain.stream.categories) == sorted(set(plain.stream.categories))
    assert "categories" not in plain.summary


@pytest.mark.parametrize("weights, words", [
    ({"triangles": 1}, "unknown categories"),
    ({"single": -1}, "integer >= 0"),
    ({"single": 1.5}, "integer >= 0"),
    ({"single": 0}, "weight 0"),
    ([1, 2], "table of weights"),
])
def test_bad_category_weights_are_named(weights, words):
    with pytest.raises(InvalidInputError, match=words):
        recipe_data({"categories": weights}, 32)


@pytest.mark.parametrize("section, words", [
    # found by benchmarks/fuzz.py (seeds 1 and 2): int() on these raised ValueError/TypeError
    ({"size": float("nan")}, "'data.size' expects int, got nan"),
    ({"size": float("inf")}, "'data.size' expects int, got inf"),
    ({"size": None}, "'data.size' expects int, got None"),
    ({"size": [32]}, "'data.size' expects int"),
    ({"seed": float("nan")}, "'data.seed' expects int"),
    ({"seed": None}, "'data.seed' expects int"),
    ({"seed": [1]}, "'data.seed' expects int"),
    ({"languages": 0.99}, "'data.languages' expects"),
    ({"languages": "en"}, "'data.languages' expects"),  # once read as ("e", "n")
    ({"languages": ["fr"]}, "data.languages must list some of en, id"),
    ({"languages": []}, "data.languages must list some of en, id"),
    # once accepted: a string size, a size PIL cannot draw, an out-of-range seed
    ({"size": "32"}, "'data.size' expects int, got '32'"),
    ({"size": True}, "'data.size' expects int"),
    ({"size": 2**70}, "data.size must be between 8 and 512"),
    ({"size": 0}, "data.size must be between 8 and 512"),
    ({"seed": 2**70}, "data.seed must be between 0 and"),
    ({"seed": -1}, "data.seed must be between 0 and"),
    ({"source": "coco"}, "unknown data source 'coco'; available: shapes"),
    ({"sise": 32}, "unknown key 'data.sise'"),
    # a mix that is not a table raised AttributeError; huge weights ran out of memory
    ({"mix": [1]}, "data.mix must be a table of source weights"),
    ({"mix": {"shapes": True}}, "data.mix.shapes must be an integer >= 1"),
    ({"mix": {"shapes": 10**9}}, "data.mix.shapes must be at most 1000"),
    ({"categories": {"single": 10**9}}, "data.categories.single must be at most 1000"),
])
def test_bad_data_sections_are_one_line_errors_naming_the_key(section, words):
    with pytest.raises(InvalidInputError) as caught:
        recipe_data(section, 32)
    message = str(caught.value)
    assert words in message and "\n" not in message


def test_data_section_takes_the_family_size_and_checks_it():
    """Without `size` the family's image size is the data's, under the same bounds."""
    assert recipe_data({}, 48).stream.size == 48
    assert recipe_data({"size": 16}, 48).summary["size"] == 16
    with pytest.raises(InvalidInputError, match="data.size must be between 8 and 512"):
        recipe_data({}, 1024)
