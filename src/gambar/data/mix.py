"""Training mixes of several sources, and the held-out filter of ../shared/shapes-spec.md by name.

The six held-out (colour, shape) pairs must never appear in training, from any source: the emoji set
has 💙 "blue heart", ⚫ "black circle", 🟧 "orange square", the glyph set "black circle" (●).
`named_pairs` reads the (colour, shape) pairs a caption names (English or Indonesian, through sizes
and synonyms: "large orange diamond" -> (orange, diamond), "lingkaran hitam" -> (black, circle)),
and `TrainingMix` drops every item whose captions or names hold a held-out one before training
sees it. Shapes sources are checked by construction (they must not allow held-out pairs).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from gambar.config import check_range, dataclass_from_dict
from gambar.data.batches import endless_batches
from gambar.data.formats import Record
from gambar.data.formats.webdataset import WebDataset
from gambar.data.loading import (
    BUILTIN,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    CaptionedImages,
    load_dataset,
    to_tensor,
)
from gambar.data.shapes import LANGUAGES, ShapesStream
from gambar.data.shapes_vocab import CATEGORIES, COLORS_ID, HELD_OUT, SHAPES_ID
from gambar.errors import InvalidInputError
from gambar.seeding import MAX_SEED

# Words for each colour and shape, English and Indonesian, beyond the shapes grammar's own: the
# names of emoji, glyphs and real captions use synonyms ("disc", "wajik", "jingga", "kotak").
COLOR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "merah"),
    "orange": ("orange", "oranye", "jingga"),
    "yellow": ("yellow", "kuning"),
    "green": ("green", "hijau"),
    "blue": ("blue", "biru"),
    "purple": ("purple", "violet", "ungu"),
    "pink": ("pink", "merah muda", "merah jambu"),
    "black": ("black", "hitam"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "circles", "disc", "discs", "disk", "disks", "bulatan", "bundaran"),
    "square": ("square", "squares", "kotak", "bujur sangkar"),
    "triangle": ("triangle", "triangles", "triangular"),
    "star": ("star", "stars"),
    "heart": ("heart", "hearts"),
    "diamond": ("diamond", "diamonds", "rhombus", "lozenge", "wajik"),
}
# Words that end a noun phrase: a colour and a shape on either side of one name two objects.
BOUNDARIES: frozenset[str] = frozenset(
    "and or with of to than next beside above below under over left right near , ; . : / "
    "dan atau serta di ke dari sebelah samping atas bawah kiri kanan dekat".split())
WINDOW = 3  # at most this many words apart ("black medium small square", "lingkaran besar hitam")
# Fields beside the captions that name an item (emoji and glyph names, class names).
NAME_FIELDS: tuple[str, ...] = ("text", "name", "name_id", "aliases", "char_name", "class_name")
MAX_WEIGHT = 1000  # a mix cycle or category draw holds each name `weight` times


def _lexicon() -> dict[tuple[str, ...], tuple[str, str]]:
    """Phrase (tuple of words) -> ("color" | "shape", name); the spec's own words included."""
    lex: dict[tuple[str, ...], tuple[str, str]] = {}
    for color, words in COLOR_WORDS.items():
        for w in (*words, COLORS_ID[color]):
            lex[tuple(w.split())] = ("color", color)
    for shape, words in SHAPE_WORDS.items():
        for w in (*words, SHAPES_ID[shape]):
            lex[tuple(w.split())] = ("shape", shape)
    return lex


_LEX = _lexicon()
_LONGEST = max(len(k) for k in _LEX)


def _tokens(text: str) -> list[tuple[str, str] | None]:
    """Colour/shape tokens, None for other words, "|" for boundaries (longest phrase first)."""
    words = re.findall(r"[^\W_]+|[,;.:/]", text.lower().replace("-", " "))
    out: list[tuple[str, str] | None] = []
    i = 0
    while i < len(words):
        for n in range(min(_LONGEST, len(words) - i), 0, -1):
            if tuple(words[i : i + n]) in _LEX:
                out.append(_LEX[tuple(words[i : i + n])])
                i += n
                break
        else:
            out.append(("|", "") if words[i] in BOUNDARIES else None)
            i += 1
    return out


def named_pairs(text: str) -> set[tuple[str, str]]:
    """Every (colour, shape) pair `text` names: "a large orange diamond" -> (orange, diamond)."""
    tokens, found = _tokens(text), set()
    for i, tok in enumerate(tokens):
        if tok is None or tok[0] != "color":
            continue
        for step in (1, -1):  # English puts the colour first, Indonesian after the shape
            for j in range(i + step, i + step * (WINDOW + 1), step):
                if not 0 <= j < len(tokens) or (tokens[j] is not None and tokens[j][0] == "|"):
                    break
                other = tokens[j]
                if other is not None and other[0] == "shape":
                    found.add((tok[1], other[1]))
    return found


def held_out_pairs(text: str, pairs: Collection[tuple[str, str]] = HELD_OUT
                   ) -> set[tuple[str, str]]:
    """The held-out pairs (the spec's six by default) that `text` names: "hati biru"."""
    return named_pairs(text) & set(pairs)


def names_held_out(texts: str | Iterable[str],
                   pairs: Collection[tuple[str, str]] = HELD_OUT) -> bool:
    """Whether any of `texts` names a held-out pair."""
    return any(held_out_pairs(t, pairs) for t in ([texts] if isinstance(texts, str) else texts))


def record_texts(record: Record) -> list[str]:
    """Everything that names a record: its captions and its name fields."""
    out = list(record.captions)
    for key in NAME_FIELDS:
        value = record.metadata.get(key)
        out.extend([value] if isinstance(value, str) else
                   [v for v in value if isinstance(v, str)] if isinstance(value, list | tuple)
                   else [])
    return out


def without_held_out(dataset: CaptionedImages, pairs: Collection[tuple[str, str]] = HELD_OUT
                     ) -> tuple[CaptionedImages, list[str]]:
    """The dataset less every record that names a held-out pair, and what was removed."""
    removed = [r.where for r in dataset.records if names_held_out(record_texts(r), pairs)]
    kept = dataset.subset(lambda r: not names_held_out(record_texts(r), pairs))
    return kept, removed


def _pattern(weights: Sequence[int]) -> list[int]:
    """One cycle of source indices, each source `weight` times, spread evenly (smooth WRR)."""
    slots = [((k + 0.5) / w, j) for j, w in enumerate(weights) for k in range(w)]
    return [j for _, j in sorted(slots)]


class TrainingMix:
    """An endless mix of sources for training; item i is a function of (seed, i) alone.

    Sources are `CaptionedImages` (gone through in a fresh permutation each epoch of that source,
    a new caption choice each epoch) and `ShapesStream`s (read in order), with integer weights: a
    cycle of sum(weights) items holds each source weight times. Every record naming a held-out
    pair is dropped up front (see `removed`); a shapes stream must not allow held-out pairs (it
    knows only the spec's six). So resuming at item i replays what an uninterrupted run saw.
    """

    def __init__(self, sources: Sequence[tuple[CaptionedImages | ShapesStream, int]],
                 seed: int = 0, held_out: Collection[tuple[str, str]] = HELD_OUT) -> None:
        if not sources:
            raise InvalidInputError("a training mix needs at least one source")
        self.sources: list[CaptionedImages | ShapesStream] = []
        self.removed: dict[str, list[str]] = {}
        sizes = set()
        for k, (source, weight) in enumerate(sources):
            check_weight(weight, f"the weight of source {k}", 1)
            if isinstance(source, WebDataset):
                raise InvalidInputError(
                    "a streamed webdataset cannot be indexed into a mix; stream it with "
                    "WebDataset(..., exclude=names_held_out) instead")
            if isinstance(source, ShapesStream):
                if source.allow_held_out:
                    raise InvalidInputError(
                        "this shapes stream allows held-out pairs; a training mix must not")
            else:
                source, gone = without_held_out(source, held_out)
                if len(source) == 0:
                    raise InvalidInputError(f"source {k} ({source.name}) has no images left")
                self.removed[f"{k}:{source.name}"] = gone
            sizes.add(source.size)
            self.sources.append(source)
        if len(sizes) > 1:
            raise InvalidInputError(f"all sources must have one image size, got {sorted(sizes)}")
        self.seed, self.weights = seed, [w for _, w in sources]
        self.pattern = _pattern(self.weights)
        # rank of each slot among its source's slots in the cycle
        self._rank = [self.pattern[:s].count(j) for s, j in enumerate(self.pattern)]

    def locate(self, index: int) -> tuple[int, int]:
        """(source, how many items of that source came before) of mix item `index`."""
        if index < 0:
            raise IndexError(f"mix index must be >= 0, got {index}")
        cycle, slot = divmod(index, len(self.pattern))
        j = self.pattern[slot]
        return j, cycle * self.weights[j] + self._rank[slot]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, dict[str, Any]]:
        j, n = self.locate(index)
        source = self.sources[j]
        if isinstance(source, ShapesStream):
            sample = source[n]
            return to_tensor(sample.image), sample.caption, {**sample.labels(), "source": "shapes"}
        epoch, position = divmod(n, len(source))
        order = _permutation(self.seed, j, epoch, len(source))
        return source.item(int(order[position]), epoch)

    def batches(self, start: int = 0, rank: int = 0, world_size: int = 1,
                batch_size: int = 32) -> Iterator[dict[str, Any]]:
        """Endless batches {"images": (B, 3, S, S), "captions": [B]} from batch `start`, for
        rank `rank` of `world_size` (the shape `TrainingTask.batches` yields)."""
        return endless_batches(self.__getitem__, _collate, start=start, rank=rank,
                               world_size=world_size, batch_size=batch_size)


def _collate(items: list[tuple[torch.Tensor, str, dict[str, Any]]]) -> dict[str, Any]:
    return {"images": torch.stack([x for x, _, _ in items]), "captions": [c for _, c, _ in items]}


@lru_cache(maxsize=16)
def _permutation(seed: int, source: int, epoch: int, n: int) -> np.ndarray:
    """The order of a source's items in one of its epochs."""
    return np.random.default_rng([seed, source, epoch]).permutation(n)


def check_weight(weight: object, where: str, low: int) -> int:
    """`weight` if it is an integer from `low` to MAX_WEIGHT, else a one-line error naming it."""
    # bool is an int subclass in Python; `shapes = true` is still a mistake.
    if type(weight) is not int or weight < low:
        raise InvalidInputError(f"{where} must be an integer >= {low}, got {weight!r}")
    if weight > MAX_WEIGHT:
        raise InvalidInputError(f"{where} must be at most {MAX_WEIGHT}, got {weight!r}; "
                                "weights are relative, so divide them all")
    return weight


@dataclass(frozen=True)
class DataSection:
    """A recipe's `[data]` section, type-checked by `dataclass_from_dict` and range-checked here,
    so that a wrong value is a one-line error naming its key before any data is drawn."""

    source: str = "shapes"
    size: int = 64  # the image side; recipe_data fills in the family's default when absent
    seed: int = 0
    languages: tuple[str, ...] = LANGUAGES
    # `{name = weight}` tables: left untyped so that their own checks name the bad entry
    categories: Any = None
    mix: Any = None

    def __post_init__(self) -> None:
        if self.source != "shapes":
            raise InvalidInputError(f"unknown data source {self.source!r}; available: shapes")
        check_range("data.size", self.size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
        check_range("data.seed", self.seed, 0, MAX_SEED)
        unknown = [code for code in self.languages if code not in LANGUAGES]
        if not self.languages or unknown:
            raise InvalidInputError(f"data.languages must list some of {', '.join(LANGUAGES)}, "
                                    f"not {list(self.languages)!r}")
        _weighted_categories(self.categories)
        if self.mix is not None:
            if not isinstance(self.mix, Mapping):  # an empty one is recipe_mix's to name
                raise InvalidInputError("data.mix must be a table of source weights, e.g. "
                                        "{shapes = 6, emoji = 1}")
            for spec, weight in self.mix.items():
                check_weight(weight, f"data.mix.{spec}", 1)


@dataclass(frozen=True)
class RecipeData:
    """What a recipe's `[data]` section names: the shapes stream, the mix around it (if any),
    and the summary a trained model's config records."""

    stream: ShapesStream
    mix: TrainingMix | None
    summary: dict[str, Any]


def training_item(stream: ShapesStream, mix: TrainingMix | None, index: int
                  ) -> tuple[torch.Tensor, str, dict[str, Any]]:
    """(image, caption, labels) of training item `index`: the mix's, or the shapes stream's
    when the recipe has no mix."""
    if mix is not None:
        return mix[index]
    sample = stream[index]
    return to_tensor(sample.image), sample.caption, sample.labels()


def recipe_data(section: Mapping[str, Any], default_size: int) -> RecipeData:
    """Read `[data]` (see DataSection): source ("shapes"), size, seed, languages, optional
    `categories` weights of the shapes stream and optional `mix`; any other key is an error (a
    task pops its own keys, such as `limit`, before calling this)."""
    cfg = dataclass_from_dict(DataSection, section, section="data")
    if "size" not in section:  # the family's image size, checked like data.size
        cfg = replace(cfg, size=default_size)
    # Held-out (colour, shape) pairs stay out of the stream (ShapesStream's default).
    stream = ShapesStream(seed=cfg.seed, size=cfg.size, languages=cfg.languages,
                          categories=_weighted_categories(cfg.categories))
    mix = None if cfg.mix is None else recipe_mix(stream, cfg.mix, seed=cfg.seed)
    summary: dict[str, Any] = {"source": cfg.source, "size": cfg.size, "seed": cfg.seed,
                               "languages": list(cfg.languages)}
    if cfg.mix is not None:
        summary["mix"] = dict(cfg.mix)
    if cfg.categories is not None:
        summary["categories"] = dict(cfg.categories)
    return RecipeData(stream, mix, summary)


def _weighted_categories(weights: Mapping[str, int] | None) -> tuple[str, ...]:
    """`categories = {two_objects = 3, single = 1, ...}` -> each name repeated weight times, which
    ShapesStream draws from uniformly; None -> every category once (the spec's uniform mix)."""
    if weights is None:
        return CATEGORIES
    if not isinstance(weights, Mapping) or not weights:
        raise InvalidInputError(
            "data.categories must be a table of weights, e.g. {single = 1, two_objects = 3}"
        )
    unknown = set(weights) - set(CATEGORIES)
    if unknown:
        raise InvalidInputError(
            f"unknown categories {sorted(unknown)} in data.categories; "
            f"choose from {', '.join(CATEGORIES)}"
        )
    for name, weight in weights.items():
        check_weight(weight, f"data.categories.{name}", 0)
    picked = tuple(name for name in CATEGORIES for _ in range(weights.get(name, 0)))
    if not picked:
        raise InvalidInputError("data.categories gives every category weight 0")
    return picked


def recipe_mix(stream: ShapesStream, weights: Mapping[str, int], *, seed: int = 0
               ) -> TrainingMix:
    """The training mix a recipe's `[data] mix = {shapes = 6, emoji = 1, glyphs = 1}` names.

    "shapes" is `stream`; every other key is a `load_dataset` spec (the built-in "emoji" and
    "glyphs", captioned in the stream's languages, or a dataset path) read at the stream's size,
    train split.
    """
    if not weights:
        raise InvalidInputError("data.mix is empty; name at least one source with a weight")
    sources: list[tuple[CaptionedImages | ShapesStream, int]] = []
    for spec, weight in weights.items():
        if spec == "shapes":
            sources.append((stream, weight))
            continue
        options: dict[str, Any] = {"languages": stream.languages} if spec in BUILTIN else {}
        # Built-in sources are drawn from installed fonts: nothing to verify on disk.
        dataset = load_dataset(spec, stream.size, "train", seed=seed,
                               verify=spec not in BUILTIN, **options)
        sources.append((dataset, weight))
    return TrainingMix(sources, seed=seed)


def item_key(meta: Mapping[str, Any], caption: str) -> str:
    """What a non-shapes mix item shows, for contrastive losses that must not call two views of
    one thing negatives: an emoji's variant group (skin tones), a glyph's character (any font)."""
    source = meta.get("source", "")
    if source == "emoji" and meta.get("variant_group"):
        return f"emoji:{meta['variant_group']}"
    if source == "glyphs" and meta.get("char_name"):
        return f"glyph:{meta['char_name']}"
    return f"{source}:{meta.get('name') or caption}"
