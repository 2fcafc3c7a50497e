"""Text-image alignment in the contrastive model's embedding: CLIP score and R-precision.

- CLIP score (Hessel et al. 2021, eq. 1): w * max(cos(image, caption), 0) with w = 2.5.
- R-precision (Xu et al. 2018, AttnGAN sec. 5.1): rank the true caption among 99 distractors;
  with one relevant caption, R-precision is the share of images whose true caption ranks first.
  Distractors are captions that do *not* describe the image: on shapes, captions whose labels
  differ (see `describes`), so a wording variant or a looser caption never counts against a model.
- R-precision over names (emoji): the true name among 99 names of other emoji.
- Zero-shot retrieval of the contrastive model itself on held-out (colour, shape) pairs, which it
  never saw in training (`contrastive_report`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from gambar.contrastive.model import ContrastiveModel
from gambar.contrastive.task import scene_key
from gambar.data.shapes import (
    LANGUAGES,
    PlacementError,
    describe,
    render_scene,
    sample_scene,
)
from gambar.data.shapes_vocab import CATEGORIES, MIRRORED_RELATION, ObjectSpec, SceneSpec
from gambar.errors import InvalidInputError
from gambar.evaluation.compositional import is_held_out

CLIPSCORE_WEIGHT = 2.5  # Hessel et al. 2021: stretches OpenAI CLIP's cosines over ~[0, 1]
DISTRACTORS = 99  # Xu et al. 2018: the true caption among 100
POOL_SIZE = 1000  # distractor captions per language, encoded once and shared by all images
POOL_SEED = 0x5EED_D15C


def clip_scores(model: ContrastiveModel, images: Sequence[Image.Image], prompts: Sequence[str]
                ) -> np.ndarray:
    """CLIP score of each (image, prompt) pair (N,): 2.5 * max(cos, 0) (Hessel et al. 2021)."""
    if len(images) != len(prompts):
        raise InvalidInputError(f"{len(images)} images but {len(prompts)} prompts")
    cos = (model.embed_images(images) * model.embed_texts(prompts)).sum(-1)
    return (CLIPSCORE_WEIGHT * cos.clamp(min=0)).double().numpy()


# ---------------------------------------------------------------------------------------------
# Which captions describe an image


def _size_fits(said: ObjectSpec, shown: ObjectSpec) -> bool:
    # An unsized prompt is drawn medium (spec), and a caption that states no size fits any size.
    return said.size is None or said.size == (shown.size or "medium")


def _fits(said: ObjectSpec, shown: ObjectSpec) -> bool:
    return said.color == shown.color and said.shape == shown.shape and _size_fits(said, shown)


def _matchable(said: Sequence[ObjectSpec], shown: Sequence[ObjectSpec]) -> bool:
    """A perfect matching of said objects to shown ones (small sets: try every assignment)."""
    if len(said) != len(shown):
        return False
    if not said:
        return True
    first, rest = said[0], said[1:]
    return any(_fits(first, s) and _matchable(rest, [*shown[:j], *shown[j + 1:]])
               for j, s in enumerate(shown))


def _canonical_relation(scene: SceneSpec) -> tuple[ObjectSpec, str, ObjectSpec] | None:
    rel = scene.relation
    if rel is None:
        return None
    a, r, b = scene.objects[rel.subject], rel.relation, scene.objects[rel.other]
    return (b, MIRRORED_RELATION[r], a) if r in ("right of", "below") else (a, r, b)


def describes(caption: SceneSpec, image: SceneSpec) -> bool:
    """Whether a caption of `caption` may truthfully describe an image drawn from `image`.

    Conservative, so a distractor is never a true description: same objects (sizes compatible),
    and a stated relation must be the image's own; where the image's layout is unknown (no
    relation was asked for) any stated relation might hold, so such a caption counts as true.
    """
    if not _matchable(caption.objects, image.objects):
        return False
    said, shown = _canonical_relation(caption), _canonical_relation(image)
    if said is None or shown is None:
        return True
    return said[1] == shown[1] and _fits(said[0], shown[0]) and _fits(said[2], shown[2])


# ---------------------------------------------------------------------------------------------
# R-precision


@dataclass(frozen=True)
class CaptionPool:
    """Candidate distractor captions of one language and their embeddings (P, E)."""

    captions: tuple[str, ...]
    scenes: tuple[SceneSpec, ...]
    embeddings: torch.Tensor


def caption_pool(model: ContrastiveModel, language: str, size: int = POOL_SIZE,
                 seed: int = POOL_SEED) -> CaptionPool:
    """`size` distinct canonical captions over all categories, held-out pairs included (so a
    held-out true caption does not stand out by its words), sizes sometimes combined."""
    if language not in LANGUAGES:
        raise InvalidInputError(f"unknown language {language!r}; choose from {LANGUAGES}")
    rng = np.random.default_rng([seed, LANGUAGES.index(language)])
    captions: dict[str, SceneSpec] = {}
    while len(captions) < size:
        scene = sample_scene(rng, allow_held_out=True)
        captions.setdefault(describe(scene, language), scene)
    texts = tuple(captions)
    return CaptionPool(texts, tuple(captions.values()), model.embed_texts(texts))


def r_precision_hits(model: ContrastiveModel, images: Sequence[Image.Image],
                     prompts: Sequence[str], scenes: Sequence[SceneSpec],
                     languages: Sequence[str], *, distractors: int = DISTRACTORS,
                     seed: int = 0, pools: dict[str, CaptionPool] | None = None) -> list[bool]:
    """Per image: does its prompt outrank `distractors` non-describing captions? (Xu et al. 2018)

    Distractors for image i are drawn from its language's pool with rng([seed, i]), so the result
    is deterministic. A tie counts as a miss.
    """
    n = len(images)
    if not n == len(prompts) == len(scenes) == len(languages):
        raise InvalidInputError("images, prompts, scenes and languages must have equal lengths")
    pools = dict(pools or {})
    for lang in sorted(set(languages)):
        if lang not in pools:
            pools[lang] = caption_pool(model, lang)
    image_emb = model.embed_images(images)  # (N, E)
    true_sim = (image_emb * model.embed_texts(prompts)).sum(-1)  # (N,)
    hits = []
    allowed_for: dict[tuple[str, str, SceneSpec], list[int]] = {}  # seeds of a prompt share it
    for i in range(n):
        pool = pools[languages[i]]
        key = (languages[i], prompts[i], scenes[i])
        if key not in allowed_for:
            allowed_for[key] = [j for j, s in enumerate(pool.scenes)
                                if not describes(s, scenes[i]) and pool.captions[j] != prompts[i]]
        allowed = allowed_for[key]
        if len(allowed) < distractors:
            raise InvalidInputError(f"only {len(allowed)} distractors for {prompts[i]!r}")
        rng = np.random.default_rng([seed, i])
        chosen = torch.as_tensor(rng.choice(allowed, size=distractors, replace=False))
        rivals = pool.embeddings[chosen] @ image_emb[i]  # (distractors,)
        hits.append(bool(true_sim[i] > rivals.max()))
    return hits


def name_r_precision(model: ContrastiveModel, images: Sequence[Image.Image],
                     names: Sequence[str], groups: Sequence[str], *,
                     distractors: int = DISTRACTORS, seed: int = 0) -> list[bool]:
    """R-precision over named things (emoji): per image, does its name outrank `distractors`
    names of *other* groups (an emoji's skin-tone variants share a group, so a variant's name is
    never a distractor)? Distractors for image i come from rng([seed, i]); a tie is a miss."""
    if not len(images) == len(names) == len(groups):
        raise InvalidInputError("images, names and groups must have equal lengths")
    unique = sorted(set(names))
    index = {name: k for k, name in enumerate(unique)}
    name_emb = model.embed_texts(unique)  # (U, E)
    image_emb = model.embed_images(images)  # (N, E)
    groups_of: dict[str, set[str]] = {}
    for name, group in zip(names, groups, strict=True):
        groups_of.setdefault(name, set()).add(group)
    hits = []
    for i, (name, group) in enumerate(zip(names, groups, strict=True)):
        allowed = [index[n] for n in unique if n != name and group not in groups_of[n]]
        if len(allowed) < distractors:
            raise InvalidInputError(f"only {len(allowed)} distractor names for {name!r}")
        rng = np.random.default_rng([seed, i])
        chosen = torch.as_tensor(rng.choice(allowed, size=distractors, replace=False))
        true = name_emb[index[name]] @ image_emb[i]
        hits.append(bool(true > (name_emb[chosen] @ image_emb[i]).max()))
    return hits


# ---------------------------------------------------------------------------------------------
# The contrastive model's own retrieval


def retrieval_top1(model: ContrastiveModel, images: Sequence[Image.Image],
                   captions: Sequence[str], keys: Sequence[str]) -> dict[str, float]:
    """Top-1 retrieval within a set of pairs, both ways; a hit is any item with the same key."""
    sim = model.similarity(images, captions)  # (N, N)
    k = np.asarray(keys, dtype=object)
    i2t = float(np.mean(k[sim.argmax(1).numpy()] == k))
    t2i = float(np.mean(k[sim.argmax(0).numpy()] == k))
    return {"image_to_text": i2t, "text_to_image": t2i}


def _scenes(n: int, held_out: bool, seed: int, size: int
            ) -> list[tuple[SceneSpec, Image.Image]]:
    rng = np.random.default_rng([seed, int(held_out)])
    out: list[tuple[SceneSpec, Image.Image]] = []
    while len(out) < n:
        category = CATEGORIES[len(out) % len(CATEGORIES)]
        scene = sample_scene(rng, allow_held_out=held_out, categories=[category], combine=0.0)
        if is_held_out(scene) != held_out:
            continue
        try:
            out.append((scene, render_scene(scene, rng, size)[0]))
        except PlacementError:
            continue
    return out


def contrastive_report(model: ContrastiveModel, n: int = 200, seed: int = 9_000_001
                       ) -> dict[str, Any]:
    """Zero-shot retrieval of a contrastive model: seen vs held-out (colour, shape) pairs.

    For each split, n scenes (all categories alike) rendered at the model's size, captioned
    canonically in each language: R-precision against 99 distractors, and top-1 retrieval both
    ways within the n pairs. Seeds default far from training streams (like the test split).
    """
    size = model.cfg.image_size
    pools = {lang: caption_pool(model, lang) for lang in LANGUAGES}
    report: dict[str, Any] = {"model": {"name": model.name, "sha256": model.sha256}, "n": n,
                              "seed": seed}
    for split, held_out in (("seen", False), ("heldout", True)):
        pairs = _scenes(n, held_out, seed, size)
        images = [im for _, im in pairs]
        keys = [scene_key(s) for s, _ in pairs]
        report[split] = {}
        for lang in LANGUAGES:
            captions = [describe(s, lang) for s, _ in pairs]
            hits = r_precision_hits(model, images, captions, [s for s, _ in pairs],
                                    [lang] * n, seed=seed, pools=pools)
            report[split][lang] = {"r_precision": float(np.mean(hits)),
                                   **retrieval_top1(model, images, captions, keys)}
    return report
