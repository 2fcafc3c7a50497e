"""The prompt parser: English and Indonesian shapes prompts -> SceneSpec, bad prompts -> errors."""

from collections import Counter

import numpy as np
import pytest

from gambar.data.prompts import detect_language, parse_prompt
from gambar.data.shapes import describe, sample_scene
from gambar.data.shapes_vocab import MIRRORED_RELATION, ObjectSpec, Relation, SceneSpec
from gambar.errors import InvalidInputError


def O(color: str, shape: str, size: str | None = None) -> ObjectSpec:  # noqa: E743
    return ObjectSpec(color, shape, size)


# (prompt, objects, relation, category)
TABLE = [
    # the spec's examples, both languages
    ("a red circle", [O("red", "circle")], None, "single"),
    ("three blue stars", [O("blue", "star")] * 3, None, "count"),
    (
        "a red circle and a green square",
        [O("red", "circle"), O("green", "square")],
        None,
        "two_objects",
    ),
    (
        "a red circle to the left of a blue square",
        [O("red", "circle"), O("blue", "square")],
        Relation(0, "left of", 1),
        "position",
    ),
    ("a large yellow triangle", [O("yellow", "triangle", "large")], None, "size"),
    ("sebuah lingkaran merah", [O("red", "circle")], None, "single"),
    ("tiga bintang biru", [O("blue", "star")] * 3, None, "count"),
    (
        "lingkaran merah dan persegi hijau",
        [O("red", "circle"), O("green", "square")],
        None,
        "two_objects",
    ),
    (
        "lingkaran merah di sebelah kiri persegi biru",
        [O("red", "circle"), O("blue", "square")],
        Relation(0, "left of", 1),
        "position",
    ),
    ("segitiga kuning besar", [O("yellow", "triangle", "large")], None, "size"),
    # combined categories
    ("two large red stars", [O("red", "star", "large")] * 2, None, "count"),
    (
        "a small pink heart above a black square",
        [O("pink", "heart", "small"), O("black", "square")],
        Relation(0, "above", 1),
        "position",
    ),
    ("dua bintang merah besar", [O("red", "star", "large")] * 2, None, "count"),
    (
        "hati merah muda kecil di atas persegi hitam",
        [O("pink", "heart", "small"), O("black", "square")],
        Relation(0, "above", 1),
        "position",
    ),
    # wording: articles, intros, suffixes, case, punctuation, plurals, relation phrasings
    ("There is a Purple Diamond.", [O("purple", "diamond")], None, "single"),
    (
        "there are four orange hearts on a white background",
        [O("orange", "heart")] * 4,
        None,
        "count",
    ),
    ("One green circle!", [O("green", "circle")], None, "single"),
    ("an orange square", [O("orange", "square")], None, "single"),
    ("the black star", [O("black", "star")], None, "single"),
    ("2 blue squares", [O("blue", "square")] * 2, None, "count"),
    (
        "a blue square on the left of a red heart",
        [O("blue", "square"), O("red", "heart")],
        Relation(0, "left of", 1),
        "position",
    ),
    (
        "a blue square left of a red heart",
        [O("blue", "square"), O("red", "heart")],
        Relation(0, "left of", 1),
        "position",
    ),
    (
        "a green star to the right of a pink circle",
        [O("green", "star"), O("pink", "circle")],
        Relation(0, "right of", 1),
        "position",
    ),
    (
        "a yellow heart below a purple triangle",
        [O("yellow", "heart"), O("purple", "triangle")],
        Relation(0, "below", 1),
        "position",
    ),
    ("a medium black heart", [O("black", "heart", "medium")], None, "size"),
    (
        "a small red circle, a large blue square",
        [O("red", "circle", "small"), O("blue", "square", "large")],
        None,
        "two_objects",
    ),
    ("ada satu belah ketupat ungu", [O("purple", "diamond")], None, "single"),
    ("Empat hati oranye dengan latar putih.", [O("orange", "heart")] * 4, None, "count"),
    (
        "satu lingkaran hijau dan sebuah persegi hitam",
        [O("green", "circle"), O("black", "square")],
        None,
        "two_objects",
    ),
    (
        "bintang kuning di sebelah kanan hati biru",
        [O("yellow", "star"), O("blue", "heart")],
        Relation(0, "right of", 1),
        "position",
    ),
    (
        "bintang kuning di kanan hati biru",
        [O("yellow", "star"), O("blue", "heart")],
        Relation(0, "right of", 1),
        "position",
    ),
    (
        "persegi ungu di bawah segitiga oranye",
        [O("purple", "square"), O("orange", "triangle")],
        Relation(0, "below", 1),
        "position",
    ),
    ("sebuah lingkaran hitam kecil", [O("black", "circle", "small")], None, "size"),
    # "merah muda" (pink) is one colour and wins over "merah" (red)
    ("sebuah hati merah muda", [O("pink", "heart")], None, "single"),
    ("sebuah hati merah", [O("red", "heart")], None, "single"),
    ("dua belah ketupat merah muda besar", [O("pink", "diamond", "large")] * 2, None, "count"),
    (
        "hati merah dan hati merah muda",
        [O("red", "heart"), O("pink", "heart")],
        None,
        "two_objects",
    ),
    # "di atas latar putih" is the background, not the relation "di atas" (above)
    ("sebuah lingkaran merah di atas latar putih", [O("red", "circle")], None, "single"),
    (
        "lingkaran merah di atas persegi biru di atas latar putih",
        [O("red", "circle"), O("blue", "square")],
        Relation(0, "above", 1),
        "position",
    ),
    ("ada lingkaran merah di atas latar belakang putih", [O("red", "circle")], None, "single"),
]


@pytest.mark.parametrize(("prompt", "objects", "relation", "category"), TABLE)
def test_parse_table(prompt, objects, relation, category):
    assert parse_prompt(prompt) == SceneSpec(tuple(objects), relation, category)


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("a red circle", "en"),
        ("three blue stars on a white background", "en"),
        ("sebuah lingkaran merah", "id"),
        ("tiga bintang biru", "id"),
        ("hati merah muda di atas latar putih", "id"),
        ("", "en"),
    ],
)
def test_detect_language(text, language):
    assert detect_language(text) == language


@pytest.mark.parametrize(
    "prompt",
    [
        "",
        "   ",
        "a purple cat",
        "a circle",  # no colour
        "a red blue circle",  # two colours
        "a small large red circle",  # two sizes
        "red circles",  # how many?
        "five red circles",
        "0 red circles",
        "a red circle and",
        "and a red circle",
        "a red circle left of",
        "two red circles left of a blue square",  # a relation joins single objects
        "a red circle left of a blue square above a green star",
        "circle red",  # English word order
        "merah lingkaran",  # Indonesian word order
        "lingkaran merah persegi biru",  # two nouns, no connective
        "a merah circle",  # mixed languages
        "muda",
    ],
)
def test_bad_prompts_raise_one_line_error(prompt):
    with pytest.raises(InvalidInputError) as info:
        parse_prompt(prompt)
    message = str(info.value)
    assert message and "\n" not in message


def test_parses_every_generator_caption():
    """Canonical and varied captions of shapes.py parse back to their scene, in both languages."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        scene = sample_scene(rng, allow_held_out=True)
        for language in ("en", "id"):
            for caption in (describe(scene, language), describe(scene, language, rng)):
                parsed = parse_prompt(caption)
                assert detect_language(caption) == language, caption
                assert parsed.category == scene.category, caption
                assert Counter(parsed.objects) == Counter(scene.objects), caption
                if scene.relation is None:
                    assert parsed.relation is None, caption
                    continue
                rel, got = scene.relation, parsed.relation
                a, b = scene.objects[rel.subject], scene.objects[rel.other]
                said = (parsed.objects[got.subject], parsed.objects[got.other], got.relation)
                # captions may say "B right of A" for "A left of B"
                assert said in [(a, b, rel.relation), (b, a, MIRRORED_RELATION[rel.relation])]
