"""The procedural shapes dataset: scenes, rendering, captions and splits (../shared/shapes-spec.md).

Every image comes with exact ground truth (colour, shape, size class, box, mask, relation), so text
alignment can be judged without a detector. A scene is a `SceneSpec` (what a prompt asks for);
`render_scene` places and draws it, `describe` words it in English or Indonesian.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import ceil, floor
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from gambar.data.shapes_draw import SUPERSAMPLE, draw_shape, shape_extent
from gambar.data.shapes_vocab import (
    BACKGROUND,
    CATEGORIES,
    COLORS,
    COLORS_ID,
    HELD_OUT,
    MIRRORED_RELATION,
    NUMBERS_EN,
    NUMBERS_ID,
    RELATION_PHRASES_EN,
    RELATION_PHRASES_ID,
    RELATIONS,
    SHAPE_PLURALS,
    SHAPES,
    SHAPES_ID,
    SIZE_JITTER,
    SIZES,
    SIZES_ID,
    ObjectSpec,
    Relation,
    SceneSpec,
)
from gambar.errors import InvalidInputError
from gambar.tensors import to_tensor  # here too for callers that import it from the dataset

LANGUAGES: tuple[str, ...] = ("en", "id")
GAP = 0.03  # spec: bounding boxes keep >= 0.03 S from each other and from the border
RELATION_SEPARATION = 0.25  # spec: related centres >= 0.25 S apart on the named axis
# Spec allows <= 0.15 S on the other axis, but beyond 0.10 S a second relation would hold; 0.05 S
# leaves room for the judge's ~1 px error in measuring a centre from antialiased pixels.
RELATION_ALIGNMENT = 0.05
MAX_LARGE = 2  # spec: at most two large objects an image (four only fit in a giveaway 2x2 grid)
COUNT_RANGE = (2, 4)
STATED_SIZES = ("small", "large")  # spec words; "medium" is what an unsized prompt gets
# Jitter range per size class, within the spec's +-10 %. The spec's judge reads size off the ink
# bbox, which at 64 px is up to ~2 px smaller than the box at the sharp tips of a light colour (a
# pink star) and ~1.7 px larger on blunt shapes, while a symmetric +-10 % leaves only 0.9 px to the
# large/medium threshold. Small objects jitter only down and large ones only up, so a stated size
# is judged right even by a bbox-only judge; medium is never a stated size and keeps +-10 %.
JITTER_RANGE: dict[str, tuple[float, float]] = {
    "small": (-SIZE_JITTER, 0.0),
    "medium": (-SIZE_JITTER, SIZE_JITTER),
    "large": (0.0, SIZE_JITTER),
}
COMBINE_PROBABILITY = 0.1  # share of count/two-object/position scenes that also state sizes
# Rejection sampling of layouts: candidates are drawn in vectorised batches; a scene that finds no
# layout in PLACEMENT_BATCHES * PLACEMENT_BATCH tries is resampled (a new scene, new sizes).
PLACEMENT_BATCH = 64
PLACEMENT_BATCHES = 8
SCENE_ATTEMPTS = 32
# Seeds of the fixed splits: train is the default stream; val/test are far from the small seeds
# people pass to training streams, so no training run sees them by accident.
SPLIT_SEEDS: dict[str, int] = {"train": 0, "val": 7_000_001, "test": 9_000_001}

_PAIRS_ALL = tuple((c, s) for c in COLORS for s in SHAPES)
_PAIRS_TRAIN = tuple(p for p in _PAIRS_ALL if p not in HELD_OUT)
_AXIS = {"left of": 0, "right of": 0, "above": 1, "below": 1}
# +1 where the subject has the smaller coordinate on the relation's axis
_BEFORE = {"left of": 1.0, "above": 1.0, "right of": -1.0, "below": -1.0}
# Wording variation of training captions (probabilities), see `describe`.
_ARTICLES_EN, _ARTICLE_P_EN = ("a", "one", ""), (0.7, 0.15, 0.15)
_ARTICLES_ID, _ARTICLE_P_ID = ("sebuah", "satu", ""), (0.4, 0.2, 0.4)
_PREFIX_P, _SUFFIX_P, _SWAP_P = 0.2, 0.15, 0.5
_SUFFIX_EN = " on a white background"
# Not "di atas latar putih": "di atas" is the relation "above" and would make captions ambiguous.
_SUFFIX_ID = " dengan latar putih"


class PlacementError(InvalidInputError):
    """No layout satisfies the spec's gaps (and relation) for this scene at this canvas size."""


@dataclass(frozen=True)
class PlacedObject:
    """One drawn object: its class, size class, size (larger box side, px) and box (px)."""

    color: str
    shape: str
    size_class: str  # "small" | "medium" | "large"
    size: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels, y down

    @property
    def center(self) -> tuple[float, float]:
        """Bounding-box centre (x, y) in pixels: the spec's "centre" everywhere."""
        x0, y0, x1, y1 = self.box
        return ((x0 + x1) / 2, (y0 + y1) / 2)


@dataclass(frozen=True, eq=False)  # eq=False: arrays and images have no truth-valued ==
class ShapesSample:
    """A rendered scene with its caption and exact ground truth."""

    image: Image.Image  # RGB, S x S, white background
    caption: str
    language: str  # "en" | "id"
    scene: SceneSpec
    objects: tuple[PlacedObject, ...]  # same order as scene.objects
    masks: np.ndarray  # (N, S, S) bool: pixel coverage >= 0.5, per object
    spans: tuple[tuple[int, int], ...] = ()  # per object: [start, end) of its phrase in caption

    def labels(self) -> dict[str, Any]:
        """JSON-able structured labels: objects, colours, shapes, sizes, boxes, relation, ..."""
        rel = self.scene.relation
        return {
            "category": self.scene.category,
            "caption": self.caption,
            "language": self.language,
            "image_size": self.image.width,
            "objects": [
                {
                    "color": o.color,
                    "shape": o.shape,
                    "size_class": o.size_class,
                    "stated_size": spec.size,
                    "size": o.size,
                    "box": list(o.box),
                    "center": list(o.center),
                }
                for o, spec in zip(self.objects, self.scene.objects, strict=True)
            ],
            "colors": [o.color for o in self.objects],
            "shapes": [o.shape for o in self.objects],
            "size_classes": [o.size_class for o in self.objects],
            "sizes": [o.size for o in self.objects],
            "boxes": [list(o.box) for o in self.objects],
            "relation": None
            if rel is None
            else {"subject": rel.subject, "relation": rel.relation, "other": rel.other},
            "spans": [list(span) for span in self.spans],
        }


# ---------------------------------------------------------------------------------------------
# Scenes


def _pick_pairs(rng: np.random.Generator, k: int, allow_held_out: bool) -> list[tuple[str, str]]:
    pairs = _PAIRS_ALL if allow_held_out else _PAIRS_TRAIN
    return [pairs[i] for i in rng.choice(len(pairs), size=k, replace=False)]


def _stated_size(rng: np.random.Generator) -> str:
    return STATED_SIZES[rng.integers(len(STATED_SIZES))]


def _pair_sizes(rng: np.random.Generator, combine: float) -> tuple[str | None, str | None]:
    """Sizes of a two-object scene: none, or (rarely) one or both stated."""
    if rng.random() >= combine:
        return None, None
    options = (None, *STATED_SIZES)
    a, b = (options[i] for i in rng.integers(len(options), size=2))
    if a is None and b is None:
        a = _stated_size(rng)
    return a, b


def sample_scene(
    rng: np.random.Generator,
    *,
    allow_held_out: bool = False,
    categories: Sequence[str] = CATEGORIES,
    combine: float = COMBINE_PROBABILITY,
) -> SceneSpec:
    """A random scene of one of `categories`; held-out (colour, shape) pairs only if allowed.

    With probability `combine`, count/two-object/position scenes also state sizes ("two large red
    stars"); pass combine=0 for scenes purely of the five evaluation categories.
    """
    unknown = set(categories) - set(CATEGORIES)
    if unknown or not categories:
        raise InvalidInputError(
            f"unknown categories {sorted(unknown)}; choose from {', '.join(CATEGORIES)}"
        )
    category = categories[rng.integers(len(categories))]
    if category in ("single", "size"):
        ((color, shape),) = _pick_pairs(rng, 1, allow_held_out)
        size = _stated_size(rng) if category == "size" else None
        return SceneSpec((ObjectSpec(color, shape, size),), None, category)
    if category == "count":
        n = int(rng.integers(COUNT_RANGE[0], COUNT_RANGE[1] + 1))
        ((color, shape),) = _pick_pairs(rng, 1, allow_held_out)
        size = None
        if rng.random() < combine:
            size = "small" if n > MAX_LARGE else _stated_size(rng)
        return SceneSpec(tuple(ObjectSpec(color, shape, size) for _ in range(n)), None, category)
    # two_objects / position: two distinct (colour, shape) pairs, so they differ in one or both
    (c0, s0), (c1, s1) = _pick_pairs(rng, 2, allow_held_out)
    z0, z1 = _pair_sizes(rng, combine)
    objects = (ObjectSpec(c0, s0, z0), ObjectSpec(c1, s1, z1))
    relation = None
    if category == "position":
        relation = Relation(0, RELATIONS[rng.integers(len(RELATIONS))], 1)
    return SceneSpec(objects, relation, category)


# ---------------------------------------------------------------------------------------------
# Rendering


def _check_scene(scene: SceneSpec, size: int) -> None:
    if not isinstance(size, int) or size < 16:
        raise InvalidInputError(f"image size must be an integer >= 16 (e.g. 64), got {size!r}")
    if not scene.objects:
        raise InvalidInputError("the scene has no objects; give at least one, e.g. a red circle")
    for o in scene.objects:
        if o.color not in COLORS or o.shape not in SHAPES or (o.size and o.size not in SIZES):
            raise InvalidInputError(f"unknown object {o}; see gambar.data.shapes_vocab")
    if sum(o.size == "large" for o in scene.objects) > MAX_LARGE:
        raise InvalidInputError(f"at most {MAX_LARGE} large objects fit one image (spec)")
    rel = scene.relation
    if rel is not None:
        n = len(scene.objects)
        if (
            rel.relation not in RELATIONS
            or rel.subject == rel.other
            or not (0 <= rel.subject < n and 0 <= rel.other < n)
        ):
            raise InvalidInputError(f"invalid relation {rel} for {n} objects")


def _place(
    rng: np.random.Generator, extents: np.ndarray, relation: Relation | None, s: int
) -> np.ndarray | None:
    """Centres (N, 2) for boxes of `extents` (N, 2) by rejection sampling, or None.

    Candidates are uniform and independent; the first valid one is kept, so a layout is uniform
    over all valid layouts (the spec's "uniformly random").
    """
    n, gap = len(extents), GAP * s
    lo, hi = gap + extents / 2, s - gap - extents / 2  # (N, 2) allowed centre range
    if (hi < lo).any():
        return None
    i, j = np.triu_indices(n, 1)
    apart = (extents[i] + extents[j]) / 2 + gap  # (P, 2): centre distance that separates a pair
    for _ in range(PLACEMENT_BATCHES):
        c = lo + rng.random((PLACEMENT_BATCH, n, 2)) * (hi - lo)  # (B, N, 2)
        ok = np.ones(PLACEMENT_BATCH, dtype=bool)
        if relation is not None:
            a, b, axis = relation.subject, relation.other, _AXIS[relation.relation]
            other = 1 - axis
            jitter = (2 * rng.random(PLACEMENT_BATCH) - 1) * RELATION_ALIGNMENT * s
            c[:, b, other] = c[:, a, other] + jitter
            ok &= (c[:, b, other] >= lo[b, other]) & (c[:, b, other] <= hi[b, other])
            ahead = _BEFORE[relation.relation] * (c[:, b, axis] - c[:, a, axis])
            ok &= ahead >= RELATION_SEPARATION * s
        if len(i):
            d = np.abs(c[:, i] - c[:, j])  # (B, P, 2)
            ok &= (d >= apart).any(axis=-1).all(axis=-1)
        hits = np.flatnonzero(ok)
        if len(hits):
            return c[hits[0]]
    return None


def _masks(labels: np.ndarray, objects: Sequence[PlacedObject], s: int) -> np.ndarray:
    """(N, S, S) bool coverage >= 0.5 from the supersampled label canvas (Sf, Sf)."""
    f = SUPERSAMPLE
    masks = np.zeros((len(objects), s, s), dtype=bool)
    for k, o in enumerate(objects):
        # Only the box (plus a pixel for rasterisation rounding) can hold this object's ink.
        x0, y0, x1, y1 = o.box
        c0, r0 = max(0, floor(x0) - 1), max(0, floor(y0) - 1)
        c1, r1 = min(s, ceil(x1) + 1), min(s, ceil(y1) + 1)
        sub = labels[r0 * f : r1 * f, c0 * f : c1 * f] == k + 1
        cover = sub.reshape(r1 - r0, f, c1 - c0, f).sum(axis=(1, 3))
        masks[k, r0:r1, c0:c1] = 2 * cover >= f * f
    return masks


def render_scene(
    scene: SceneSpec, rng: np.random.Generator, size: int = 64
) -> tuple[Image.Image, tuple[PlacedObject, ...], np.ndarray]:
    """Draw `scene` on a white size x size canvas: (RGB image, placed objects, (N, S, S) masks).

    Sizes are jittered, positions sampled (see `_place`); raises PlacementError when no layout is
    found in a bounded number of tries.
    """
    _check_scene(scene, size)
    s = size
    classes = [o.size or "medium" for o in scene.objects]  # spec: no stated size -> medium
    lo, hi = np.array([JITTER_RANGE[c] for c in classes]).T
    sides = np.array([SIZES[c] for c in classes]) * s * (1 + lo + (hi - lo) * rng.random(len(lo)))
    extents = np.array([shape_extent(o.shape) for o in scene.objects]) * sides[:, None]
    centres = _place(rng, extents, scene.relation, s)
    if centres is None:
        raise PlacementError(
            f"no layout fits {len(scene.objects)} objects on a {s}x{s} canvas; use fewer or "
            "smaller objects"
        )
    objects = tuple(
        PlacedObject(
            o.color,
            o.shape,
            cls,
            float(side),
            (float(cx - w / 2), float(cy - h / 2), float(cx + w / 2), float(cy + h / 2)),
        )
        for o, cls, side, (cx, cy), (w, h) in zip(
            scene.objects, classes, sides, centres, extents, strict=True
        )
    )
    # One supersampled canvas of object indices (0 = background), drawn once; its palette turns it
    # into the RGB image, and the indices give the masks, so image and masks cannot disagree.
    f = SUPERSAMPLE
    canvas = Image.new("P", (s * f, s * f), 0)
    canvas.putpalette([v for o in (BACKGROUND, *(COLORS[o.color] for o in objects)) for v in o])
    draw = ImageDraw.Draw(canvas)
    for k, o in enumerate(objects):
        # Pillow fills polygons edge-inclusively, one canvas pixel wider than the geometry; drawing
        # 1/f px smaller makes the drawn box match `o.box` on average.
        draw_shape(draw, o.shape, o.center, o.size - 1 / f, fill=k + 1, scale=f)
    # BOX = exact area average: antialiased edges, and pixels fully inside keep the palette colour.
    image = canvas.convert("RGB").resize((s, s), Image.Resampling.BOX)
    return image, objects, _masks(np.asarray(canvas), objects, s)


# ---------------------------------------------------------------------------------------------
# Captions


def _groups(objects: Sequence[ObjectSpec]) -> list[tuple[ObjectSpec, int]]:
    """Identical objects grouped with their count, in order of first appearance."""
    counts: dict[ObjectSpec, int] = {}
    for o in objects:
        counts[o] = counts.get(o, 0) + 1
    return list(counts.items())


def _phrase_en(o: ObjectSpec, n: int, article: str) -> str:
    words = ([o.size] if o.size else []) + [o.color]
    if n > 1:
        return " ".join([NUMBERS_EN[n], *words, SHAPE_PLURALS[o.shape]])
    if article == "a" and words[0][0] in "aeiou":
        article = "an"
    return " ".join([article, *words, o.shape] if article else [*words, o.shape])


def _phrase_id(o: ObjectSpec, n: int, article: str) -> str:
    # Indonesian: noun, then colour, then size; plurals are not inflected ("tiga bintang biru").
    words = [SHAPES_ID[o.shape], COLORS_ID[o.color]] + ([SIZES_ID[o.size]] if o.size else [])
    det = NUMBERS_ID[n] if n > 1 else article
    return " ".join([det, *words] if det else words)


Span = tuple[int, int]  # [start, end) characters of a caption


def describe(scene: SceneSpec, language: str, rng: np.random.Generator | None = None) -> str:
    """The scene's caption: canonical when rng is None ("a red circle"), else varied wording."""
    return describe_with_spans(scene, language, rng)[0]


def describe_with_spans(scene: SceneSpec, language: str, rng: np.random.Generator | None = None
                        ) -> tuple[str, tuple[Span, ...]]:
    """The caption and, per object (scene order), the span of the phrase that names it.

    Identical objects share their group's phrase ("three blue stars"). The spans label the
    layout stage's training data: which words ground which box. Draws from `rng` exactly as the
    captions always have, so streams keep their captions."""
    if language not in LANGUAGES:
        raise InvalidInputError(f"unknown language {language!r}; choose from {LANGUAGES}")
    en = language == "en"
    phrase, connective = (_phrase_en, "and") if en else (_phrase_id, "dan")

    def article() -> str:
        if rng is None:
            # Canonical Indonesian uses "sebuah" only for a lone unsized object (spec examples).
            lone = len(scene.objects) == 1 and scene.objects[0].size is None
            return "a" if en else ("sebuah" if lone else "")
        words, p = (_ARTICLES_EN, _ARTICLE_P_EN) if en else (_ARTICLES_ID, _ARTICLE_P_ID)
        return words[rng.choice(len(words), p=p)]

    rel = scene.relation
    spans: dict[ObjectSpec | int, Span] = {}  # by object index (relations) or by group
    if rel is not None:
        if len(scene.objects) != 2:
            raise InvalidInputError("a caption with a relation needs exactly two objects")
        ia, ib, name = rel.subject, rel.other, rel.relation
        wordings = (RELATION_PHRASES_EN if en else RELATION_PHRASES_ID)[name]
        if rng is not None and rng.random() < _SWAP_P:  # "B right of A" for "A left of B"
            ia, ib, name = ib, ia, MIRRORED_RELATION[name]
            wordings = (RELATION_PHRASES_EN if en else RELATION_PHRASES_ID)[name]
        said = wordings[0] if rng is None else wordings[rng.integers(len(wordings))]
        first = phrase(scene.objects[ia], 1, article())
        second = phrase(scene.objects[ib], 1, article())
        body, plural = f"{first} {said} {second}", False
        spans[ia] = (0, len(first))
        spans[ib] = (len(body) - len(second), len(body))
    else:
        groups = _groups(scene.objects)
        if rng is not None and len(groups) > 1:
            groups = [groups[i] for i in rng.permutation(len(groups))]
        parts = [phrase(o, n, article()) for o, n in groups]
        body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + f" {connective} {parts[-1]}"
        at = 0
        for (o, _), part in zip(groups, parts, strict=True):
            at = body.index(part, at)
            spans[o] = (at, at + len(part))
            at += len(part)
        plural = groups[0][1] > 1
    shift = 0
    if rng is not None:
        if rng.random() < _PREFIX_P:
            prefix = ("there are " if plural else "there is ") if en else "ada "
            body, shift = prefix + body, len(prefix)
        if rng.random() < _SUFFIX_P:
            body += _SUFFIX_EN if en else _SUFFIX_ID
    keys = range(len(scene.objects)) if rel is not None else scene.objects
    return body, tuple((spans[k][0] + shift, spans[k][1] + shift) for k in keys)


# ---------------------------------------------------------------------------------------------
# Streams, splits, torch dataset


class ShapesStream:
    """Endless deterministic stream: item i depends only on (seed, i), never on access order."""

    def __init__(
        self,
        seed: int = 0,
        size: int = 64,
        languages: Sequence[str] = LANGUAGES,
        allow_held_out: bool = False,
        categories: Sequence[str] = CATEGORIES,
    ) -> None:
        if seed < 0:
            raise InvalidInputError(f"seed must be >= 0, got {seed}")
        if not languages or set(languages) - set(LANGUAGES):
            raise InvalidInputError(f"languages must be a subset of {LANGUAGES}, got {languages}")
        if not categories or set(categories) - set(CATEGORIES):
            raise InvalidInputError(
                f"categories must be a subset of {CATEGORIES}, got {categories}"
            )
        self.seed, self.size = seed, size
        self.languages, self.categories = tuple(languages), tuple(categories)
        self.allow_held_out = allow_held_out

    def __getitem__(self, index: int) -> ShapesSample:
        """The sample at `index` (>= 0), rendered from np.random.default_rng([seed, index])."""
        if index < 0:
            raise IndexError(f"stream index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, index])
        for _ in range(SCENE_ATTEMPTS):
            scene = sample_scene(
                rng, allow_held_out=self.allow_held_out, categories=self.categories
            )
            try:
                image, objects, masks = render_scene(scene, rng, self.size)
                break
            except PlacementError:
                continue  # spec: give up on a scene after bounded tries and draw another
        else:
            raise RuntimeError(f"no scene could be placed at size {self.size}")  # a bug, not input
        language = self.languages[rng.integers(len(self.languages))]
        caption, spans = describe_with_spans(scene, language, rng)
        return ShapesSample(image, caption, language, scene, objects, masks, spans)

    def take(self, start: int, n: int) -> list[ShapesSample]:
        """Items start .. start + n - 1."""
        return [self[i] for i in range(start, start + n)]


def _split_seed(split: str) -> int:
    if split not in SPLIT_SEEDS:
        raise InvalidInputError(f"unknown split {split!r}; choose from {', '.join(SPLIT_SEEDS)}")
    return SPLIT_SEEDS[split]


def fixed_split(
    split: str, n: int, size: int = 64, languages: Sequence[str] = LANGUAGES
) -> list[ShapesSample]:
    """The first n samples of a split ("train" | "val" | "test"); splits use disjoint seeds."""
    return ShapesStream(_split_seed(split), size, languages).take(0, n)


class ShapesDataset(torch.utils.data.Dataset):
    """Map-style dataset over a list of samples or a slice of a stream (rendered lazily).

    Items are (image (3, S, S) in [-1, 1], caption, labels dict); batch them with `collate`.
    """

    def __init__(
        self,
        source: Sequence[ShapesSample] | ShapesStream,
        length: int | None = None,
        start: int = 0,
    ) -> None:
        if isinstance(source, ShapesStream):
            if length is None:
                raise InvalidInputError("a stream is endless; give ShapesDataset a length")
            self.source, self.start, self.length = source, start, length
        else:
            self.source, self.start = source, 0
            self.length = len(source) if length is None else min(length, len(source))

    @classmethod
    def split(
        cls, split: str, n: int, size: int = 64, languages: Sequence[str] = LANGUAGES
    ) -> ShapesDataset:
        """A dataset over `fixed_split(split, n, size, languages)`, rendered lazily."""
        return cls(ShapesStream(_split_seed(split), size, languages), length=n)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, dict[str, Any]]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        sample = self.source[self.start + index]
        return to_tensor(sample.image), sample.caption, sample.labels()

    @staticmethod
    def collate(
        batch: Sequence[tuple[torch.Tensor, str, dict[str, Any]]],
    ) -> tuple[torch.Tensor, list[str], list[dict[str, Any]]]:
        """(B, 3, S, S) images, B captions, B label dicts (labels differ in length per item)."""
        images, captions, labels = zip(*batch, strict=True)
        return torch.stack(images), list(captions), list(labels)
