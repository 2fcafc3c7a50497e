"""`evaluate(pipeline, suite)`: every figure of one model on one suite, deterministically.

Any Pipeline of any family is scored the same way: the suite's prompts and seeds go through
`generate`, the shapes judge checks each image against its prompt's scene, and the contrastive
model (when one is given) supplies realism (FID/KID against ground-truth renderings of the same
scenes and seeds), alignment (CLIP score, R-precision) and feature diversity. Same model, suite,
seed and contrastive model give the same numbers; only the "run" section (timing) differs.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

import gambar
from gambar.contrastive.model import ContrastiveModel
from gambar.data.shapes import SCENE_ATTEMPTS, PlacementError, render_scene
from gambar.data.shapes_vocab import CATEGORIES, SceneSpec
from gambar.errors import InvalidInputError
from gambar.evaluation.clip_score import clip_scores, r_precision_hits
from gambar.evaluation.compositional import Judgement, judge, score
from gambar.evaluation.diversity import (
    class_entropy,
    pairwise_cosine_distance,
    pairwise_pixel_distance,
    per_prompt_spread,
)
from gambar.evaluation.fid import feature_extractor, fid_kid
from gambar.evaluation.layout_check import render_layout
from gambar.evaluation.suites import Suite, SuitePrompt
from gambar.pipeline import Pipeline

RESULT_FORMAT = "gambar-eval/1"
REFERENCE_TAG = 0x0EF  # separates reference-rendering seeds from any training stream's


@dataclass(frozen=True)
class EvalImage:
    """One generated image with its prompt, seed and the judge's verdict."""

    prompt: SuitePrompt
    seed: int
    image: Image.Image
    judgement: Judgement


@dataclass(frozen=True)
class Evaluation:
    """The JSON-ready figures and the images they were computed from (for the HTML report)."""

    result: dict[str, Any]
    images: tuple[EvalImage, ...]


def reference_image(scene: SceneSpec, seed: int, size: int) -> Image.Image:
    """The ground-truth rendering of `scene` for image seed `seed`: FID's "real" image."""
    rng = np.random.default_rng([REFERENCE_TAG, seed])
    for _ in range(SCENE_ATTEMPTS):
        try:
            return render_scene(scene, rng, size)[0]
        except PlacementError:
            continue  # the rng has moved on: the next try is another layout
    raise InvalidInputError(f"scene {scene} does not fit a {size}x{size} image")


def summarise(rows: Sequence[tuple[str, str, bool, float]]) -> dict[str, Any]:
    """Mean of a per-image value like the judge's score: per category, overall = mean of the
    category means, per language; held-out rows apart under "heldout"."""

    def block(subset: list[tuple[str, str, bool, float]]) -> dict[str, Any]:
        by_cat: dict[str, list[float]] = {}
        for category, _, _, value in subset:
            by_cat.setdefault(category, []).append(float(value))
        cats = {c: float(np.mean(by_cat[c])) for c in CATEGORIES if c in by_cat}
        return {"overall": float(np.mean(list(cats.values()))) if cats else None,
                "categories": cats, "n": len(subset)}

    def with_languages(subset: list[tuple[str, str, bool, float]]) -> dict[str, Any]:
        out = block(subset)
        out["languages"] = {lang: block([r for r in subset if r[1] == lang])
                            for lang in sorted({r[1] for r in subset})}
        return out

    report = with_languages([r for r in rows if not r[2]])
    report["heldout"] = with_languages([r for r in rows if r[2]])
    return report


def _rows(images: Sequence[EvalImage], values: Sequence[float]) -> list[tuple[str, str, bool,
                                                                                float]]:
    return [(e.prompt.category, e.prompt.language, e.prompt.held_out, v)
            for e, v in zip(images, values, strict=True)]


def _groups(images: Sequence[EvalImage], items: Sequence[Any]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for e, item in zip(images, items, strict=True):
        groups.setdefault(e.prompt.id, []).append(item)
    return groups


def _sampler_settings(pipe: Pipeline, provenance: dict[str, Any]) -> dict[str, Any]:
    """The generation options the images were drawn with, as their provenance records them."""
    keys = {spec.provenance or spec.name for spec in pipe.Options.specs()}
    return {k: provenance[k] for k in sorted(keys) if k in provenance}


def evaluate(pipe: Pipeline, suite: Suite, *, n: int = 4, seed: int = 0,
             clip: ContrastiveModel | None = None, options: dict[str, Any] | None = None,
             batch_size: int = 8, progress: bool = True) -> Evaluation:
    """Score `pipe` on `suite`: n images per prompt, seeds shifted by `seed` (see Suite.seeds).

    `options` (the family's option names: steps, guidance, ...) go to `generate`; None values
    keep the model's defaults. Without `clip`, realism, alignment and feature diversity are None.
    """
    if isinstance(pipe, ContrastiveModel) or not hasattr(pipe, "generate"):
        raise InvalidInputError(
            f"{getattr(pipe, 'name', pipe)} does not generate images; a contrastive model is "
            "evaluated on its own (gambar evaluate MODEL_DIR) or passed as --clip")
    start = time.monotonic()
    jobs = [(p, s) for p in suite.prompts for s in suite.seeds(p, n, seed)]
    options = {k: v for k, v in (options or {}).items() if v is not None}
    generated = pipe.generate([p.prompt for p, _ in jobs], seeds=[s for _, s in jobs],
                              batch_size=batch_size, progress=progress, **options)
    images = tuple(EvalImage(p, s, g.image, judge(g.image, p.scene))
                   for (p, s), g in zip(jobs, generated, strict=True))
    pils = [e.image for e in images]
    # A model that plans a layout first (the grounded family) records it: judge it on its own.
    layout_ok = [judge(render_layout(g.provenance["layout"]), p.scene).correct
                 if g.provenance.get("layout_source") == "sampled" else None
                 for (p, _), g in zip(jobs, generated, strict=True)]
    result: dict[str, Any] = {
        "format": RESULT_FORMAT,
        "model": {"name": pipe.name, "family": pipe.family, "sha256": pipe.sha256},
        "suite": suite.summary(),
        "seed": seed,
        "n_per_prompt": n,
        "sampler": _sampler_settings(pipe, generated[0].provenance),
        "judge": score((e.prompt.category, e.prompt.language, e.prompt.held_out,
                        e.judgement.correct) for e in images),
        "diversity": {
            "pixel": per_prompt_spread(_groups(images, pils), pairwise_pixel_distance),
            "class_entropy": class_entropy([[o.label() for o in e.judgement.objects]
                                            for e in images if not e.prompt.held_out]),
        },
        "layout": None if None in layout_ok else score(
            (e.prompt.category, e.prompt.language, e.prompt.held_out, ok)
            for e, ok in zip(images, layout_ok, strict=True)),
        "realism": None,
        "alignment": None,
        "contrastive": None,
    }
    per_image: list[dict[str, Any]] = [
        {} if ok is None else {"layout_correct": ok} for ok in layout_ok]
    result["diversity"]["feature"] = None
    if clip is not None:
        figures = _clip_figures(clip, images, seed)
        result["diversity"]["feature"] = figures.pop("diversity_feature")
        per_image = [{**a, **b} for a, b in zip(per_image, figures.pop("per_image"),
                                                 strict=True)]
        result.update(figures)
    result["images"] = [
        {"prompt_id": e.prompt.id, "seed": e.seed, "correct": e.judgement.correct,
         "reason": e.judgement.reason, **extra}
        for e, extra in zip(images, per_image, strict=True)
    ]
    result["environment"] = {"gambar_version": gambar.__version__,
                             "torch_version": torch.__version__, "machine": platform.machine()}
    result["run"] = {"wall_time_s": round(time.monotonic() - start, 3),
                     "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return Evaluation(result, images)


def _clip_figures(clip: ContrastiveModel, images: Sequence[EvalImage], seed: int
                  ) -> dict[str, Any]:
    """Realism, alignment and feature diversity through the contrastive model."""
    pils = [e.image for e in images]
    size = pils[0].width
    refs: dict[tuple[str, int], Image.Image] = {}
    for e in images:  # one reference per (scene, seed): both languages share it
        key = (e.prompt.scene_id, e.seed)
        if key not in refs:
            refs[key] = reference_image(e.prompt.scene, e.seed, size)
    realism = fid_kid(list(refs.values()), pils, feature_extractor(clip), seed=seed)
    realism["features"] = {"model": clip.name, "sha256": clip.sha256, "dim": clip.cfg.width}
    features = clip.image_features(pils)
    prompts = [e.prompt.prompt for e in images]
    cs = clip_scores(clip, pils, prompts)
    hits = r_precision_hits(clip, pils, prompts, [e.prompt.scene for e in images],
                            [e.prompt.language for e in images], seed=seed)
    return {
        "realism": realism,
        "alignment": {"clip_score": summarise(_rows(images, cs.tolist())),
                      "r_precision": summarise(_rows(images, [float(h) for h in hits]))},
        "contrastive": {"name": clip.name, "sha256": clip.sha256},
        "diversity_feature": per_prompt_spread(_groups(images, list(features)),
                                               lambda g: pairwise_cosine_distance(torch.stack(g))),
        "per_image": [{"clip_score": float(c), "r_precision_hit": bool(h)}
                       for c, h in zip(cs, hits, strict=True)],
    }
