"""Diversity: do different seeds of one prompt give different images, and does a model cover the
domain's classes?

- Per-prompt spread: mean pairwise distance among the images of one prompt across seeds, in
  contrastive features (cosine distance) and in pixels (RMS); mode collapse shows as ~0. The
  feature version is the LPIPS-diversity idea of Zhu et al. 2017 (BicycleGAN) with our own features.
- Class entropy in the style of the Inception Score (Salimans et al. 2016):
  IS = exp(E_x KL(p(y|x) || p(y))) = exp(H(y) - E_x H(y|x)), with p(y|x) the judge's detected
  (colour, shape) labels of image x instead of an Inception classifier's softmax.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from gambar.data.shapes_vocab import COLORS, SHAPES

NO_OBJECT = "none"  # the class of an image in which the judge finds nothing
N_CLASSES = len(COLORS) * len(SHAPES) + 1  # (colour, shape) pairs and NO_OBJECT


def pairwise_cosine_distance(features: torch.Tensor) -> float:
    """Mean 1 - cos over all pairs of rows of features (K, D), K >= 2; 0 when all are equal."""
    if features.shape[0] < 2:
        raise ValueError("need at least two images to measure their spread")
    f = torch.nn.functional.normalize(features.double(), dim=-1)
    cos = f @ f.T  # (K, K)
    i, j = torch.triu_indices(len(f), len(f), offset=1)
    return float((1.0 - cos[i, j]).mean().clamp(min=0.0))


def pairwise_pixel_distance(images: Sequence[Image.Image]) -> float:
    """Mean RMS pixel difference (0..1 scale) over all pairs of equally sized images."""
    if len(images) < 2:
        raise ValueError("need at least two images to measure their spread")
    x = np.stack([np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0 for im in images])
    x = x.reshape(len(images), -1)  # (K, P)
    i, j = np.triu_indices(len(x), 1)
    return float(np.sqrt(((x[i] - x[j]) ** 2).mean(axis=1)).mean())


def per_prompt_spread(groups: Mapping[str, Any], distance: Any) -> dict[str, Any]:
    """{"mean", "min", "per_prompt"} of `distance(group)` over prompts with >= 2 images."""
    per = {key: distance(group) for key, group in groups.items() if len(group) >= 2}
    if not per:
        return {"mean": None, "min": None, "per_prompt": {}}
    values = list(per.values())
    return {"mean": float(np.mean(values)), "min": float(np.min(values)), "per_prompt": per}


def class_entropy(labels: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Inception-Score-style class statistics from per-image label lists (Salimans et al. 2016).

    labels[x] are the classes found in image x (repeats allowed); p(y|x) spreads evenly over them,
    and an image with none is class NO_OBJECT. Entropies in nats; `score` = exp(H(y) - E H(y|x)),
    between 1 (every image the same) and N_CLASSES.
    """
    if not labels:
        raise ValueError("no images")
    marginal: dict[str, float] = {}
    conditional = 0.0
    for found in labels:
        counts = Counter(found or [NO_OBJECT])
        total = sum(counts.values())
        conditional += -sum(c / total * math.log(c / total) for c in counts.values())
        for label, c in counts.items():
            marginal[label] = marginal.get(label, 0.0) + c / total
    n = len(labels)
    h_y = -sum(m / n * math.log(m / n) for m in marginal.values())
    h_yx = conditional / n
    return {"score": math.exp(h_y - h_yx), "entropy": h_y, "conditional_entropy": h_yx,
            "classes_seen": len(marginal), "classes_possible": N_CLASSES}
