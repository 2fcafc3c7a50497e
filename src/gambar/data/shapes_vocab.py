"""The shapes domain's vocabulary, exactly as ../shared/shapes-spec.md defines it.

Shared by the data generator (captions), the prompt parser and the judge, so that the three can
never disagree on a colour value or a word.
"""

from __future__ import annotations

from dataclasses import dataclass

# name -> RGB; the palette of the spec. Order is stable (used as class indices).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 0),
    "yellow": (240, 210, 0),
    "green": (30, 160, 60),
    "blue": (30, 70, 220),
    "purple": (130, 40, 170),
    "pink": (250, 120, 190),
    "black": (25, 25, 25),
}
COLORS_ID: dict[str, str] = {
    "red": "merah",
    "orange": "oranye",
    "yellow": "kuning",
    "green": "hijau",
    "blue": "biru",
    "purple": "ungu",
    "pink": "merah muda",
    "black": "hitam",
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "diamond")
SHAPES_ID: dict[str, str] = {
    "circle": "lingkaran",
    "square": "persegi",
    "triangle": "segitiga",
    "star": "bintang",
    "heart": "hati",
    "diamond": "belah ketupat",
}
SHAPE_PLURALS: dict[str, str] = {s: s + "s" for s in SHAPES}

# Object size = the larger side of its bounding box, as a fraction of the canvas side S.
SIZES: dict[str, float] = {"small": 0.18, "medium": 0.26, "large": 0.36}
SIZES_ID: dict[str, str] = {"small": "kecil", "medium": "sedang", "large": "besar"}
SIZE_JITTER = 0.10  # each object's size varies by at most +-10 %
# The judge's size classes: small < 0.22 S <= medium < 0.31 S <= large.
SIZE_BOUNDS = (0.22, 0.31)

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
RELATIONS_ID: dict[str, str] = {
    "left of": "di sebelah kiri",
    "right of": "di sebelah kanan",
    "above": "di atas",
    "below": "di bawah",
}
RELATION_MARGIN = 0.10  # "A left of B" holds when cx(A) + 0.1 S < cx(B)
# Every wording a caption may use for a relation, canonical first. The data generator varies among
# them; a prompt parser accepts all of them (longest match first: "to the left of" > "left of").
RELATION_PHRASES_EN: dict[str, tuple[str, ...]] = {
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above",),
    "below": ("below",),
}
RELATION_PHRASES_ID: dict[str, tuple[str, ...]] = {
    "left of": ("di sebelah kiri", "di kiri"),
    "right of": ("di sebelah kanan", "di kanan"),
    "above": ("di atas",),
    "below": ("di bawah",),
}
# "A left of B" says the same as "B right of A": captions swap the pair this way.
MIRRORED_RELATION: dict[str, str] = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
}

NUMBERS_EN: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four"}
NUMBERS_ID: dict[int, str] = {1: "satu", 2: "dua", 3: "tiga", 4: "empat"}

CATEGORIES: tuple[str, ...] = ("single", "count", "two_objects", "position", "size")

# (colour, shape) pairs never shown in training: they measure zero-shot composition.
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    {
        ("green", "star"),
        ("pink", "triangle"),
        ("blue", "heart"),
        ("yellow", "diamond"),
        ("black", "circle"),
        ("orange", "square"),
    }
)

BACKGROUND = (255, 255, 255)
INK_THRESHOLD = 195  # judge: a pixel is background when min(R, G, B) >= 195


@dataclass(frozen=True)
class ObjectSpec:
    """One object a prompt asks for. size is None when the prompt states none."""

    color: str
    shape: str
    size: str | None = None


@dataclass(frozen=True)
class Relation:
    """`subject` (index into objects) is `relation` of `other`, e.g. 0 "left of" 1."""

    subject: int
    relation: str
    other: int


@dataclass(frozen=True)
class SceneSpec:
    """What a prompt asks for: a multiset of objects and at most one relation."""

    objects: tuple[ObjectSpec, ...]
    relation: Relation | None = None
    category: str = "single"
