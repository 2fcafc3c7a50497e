"""The shapes judge: is an image what its prompt asks for? ("Judging an image", shapes-spec.md)

Like GenEval (Ghosh et al. 2023) it checks objects, colours, counts, positions and sizes, but with
no learned detector: the shapes domain is flat colour on white, so connected components of ink are
the objects. Steps, all at 64x64:

1. ink = min(R, G, B) < 195; 8-connected components with area >= 0.3 % of the image are objects.
2. colour = median RGB of the component's core (eroded by one pixel), nearest palette colour in
   CIELAB. The median, not the mean: antialiased edges pull a mean toward pink or grey.
3. shape = the best of six templates by correlation, each drawn with the component's ink mass and
   centroid, so antialiasing, blur and JPEG move template and image alike.
4. size = larger bounding-box side, measured to sub-pixel accuracy (see `_side`), classed by
   SIZE_BOUNDS; relations compare bounding-box centres with a 0.1 S margin.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from gambar.data.prompts import parse_prompt
from gambar.data.shapes_draw import shape_extent, shape_mask, shape_outline
from gambar.data.shapes_vocab import (
    BACKGROUND,
    CATEGORIES,
    COLORS,
    HELD_OUT,
    INK_THRESHOLD,
    RELATION_MARGIN,
    SHAPES,
    SIZE_BOUNDS,
    ObjectSpec,
    SceneSpec,
)
from gambar.errors import InvalidInputError

JUDGE_SIZE = 64  # spec: judge at 64x64
MIN_AREA_FRACTION = 0.003  # spec: smaller components are specks (12 px at 64x64)
MIN_AREA = round(MIN_AREA_FRACTION * JUDGE_SIZE**2)
MIN_CORE = 3  # spec: the eroded core is used unless it keeps fewer pixels than this
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
# Antialiased and blurred edges spread an object's ink up to ~2 px beyond its ink pixels; pixels
# that far (and nearer to this object than to another) count toward its ink mass.
MASS_RING = 2
# Pixels farther than this from any object are plain background: their mean level is the zero of
# the ink-coverage scale (noise clipped at 255 and JPEG shift it slightly).
BACKGROUND_RING = 3
# The thresholded pixel box overshoots the true box by up to ~1.5 px of antialiased edge (2.8 px
# after JPEG) and misses sharp tips by up to ~2 px, while size classes are only ~1 px apart at
# 64x64; so size comes from the ink mass unless the pixel box is clearly larger (a stretched shape).
BBOX_SLACK = 0.05  # fraction of S
TEMPLATE_SUBPIXEL = 4  # templates are placed to 1/4 px before box-averaging to pixels


# ---------------------------------------------------------------------------------------------
# Colour


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3) in 0-255 -> CIELAB (..., 3), D65 white (IEC 61966-2-1; CIE 1976 L*a*b*)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array(
        [
            [0.4124564, 0.3575761, 0.1804375],
            [0.2126729, 0.7151522, 0.0721750],
            [0.0193339, 0.1191920, 0.9503041],
        ]
    )
    xyz = linear @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])  # relative to the D65 white
    delta = 6.0 / 29.0
    f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3 * delta**2) + 4.0 / 29.0)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return np.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], axis=-1)


_PALETTE = tuple(COLORS)
_PALETTE_RGB = np.array([COLORS[c] for c in _PALETTE], dtype=np.float32)  # (8, 3)
_PALETTE_LAB = srgb_to_lab(_PALETTE_RGB)


def nearest_color(rgb: Sequence[float] | np.ndarray) -> str:
    """Name of the palette colour nearest to `rgb` (3,) in CIELAB (CIE76 distance)."""
    d = ((_PALETTE_LAB - srgb_to_lab(np.asarray(rgb))) ** 2).sum(-1)  # (8,)
    return _PALETTE[int(d.argmin())]


# ---------------------------------------------------------------------------------------------
# Shape templates


@cache
def _geometry(shape: str) -> tuple[float, np.ndarray]:
    """(area, centroid offset from the bbox centre (2,)) of the shape with larger side 1."""
    p = shape_outline(shape)
    x, y, xn, yn = p[:, 0], p[:, 1], np.roll(p[:, 0], -1), np.roll(p[:, 1], -1)
    cross = x * yn - xn * y
    area = cross.sum() / 2  # shoelace; the bbox is centred at 0, so the centroid is the offset
    centroid = np.array([((x + xn) * cross).sum(), ((y + yn) * cross).sum()]) / (6 * area)
    return float(abs(area)), centroid


@lru_cache(maxsize=1024)
def _hires(shape: str, width: int, height: int) -> np.ndarray:
    """Cached `shape_mask`: templates repeat across components of similar size."""
    return shape_mask(shape, width, height)


def _fitted_template(
    shape: str, mass: float, centroid: np.ndarray, window: tuple[int, int, int, int]
) -> tuple[np.ndarray, float]:
    """`shape` with ink area `mass` and centroid `centroid`, drawn over window (x0, y0, x1, y1).

    Returns ((H, W) coverage, larger side in px). Matching ink mass and centroid instead of the
    thresholded box makes the template antialiased and placed like the object, to 1/4 px.
    """
    area, offset = _geometry(shape)
    side = float(np.sqrt(mass / area))
    ew, eh = shape_extent(shape)
    w, h = ew * side, eh * side
    cx, cy = centroid - offset * side
    x0, y0, x1, y1 = window
    f = TEMPLATE_SUBPIXEL
    cw, ch = (x1 - x0) * f, (y1 - y0) * f
    tw, th = max(1, round(w * f)), max(1, round(h * f))
    ox, oy = round((cx - w / 2 - x0) * f), round((cy - h / 2 - y0) * f)
    canvas = np.zeros((ch, cw), dtype=np.float32)
    dx0, dy0, dx1, dy1 = max(0, ox), max(0, oy), min(cw, ox + tw), min(ch, oy + th)
    if dx1 > dx0 and dy1 > dy0:
        t = _hires(shape, tw, th)
        canvas[dy0:dy1, dx0:dx1] = t[dy0 - oy : dy1 - oy, dx0 - ox : dx1 - ox]
    return canvas.reshape(ch // f, f, cw // f, f).mean(axis=(1, 3)), side


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denom = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b) / denom if denom > 0 else -1.0


# ---------------------------------------------------------------------------------------------
# Detection


def size_class(side: float, image_size: int = JUDGE_SIZE) -> str:
    """Spec size class of a larger box side (px): small < 0.22 S <= medium < 0.31 S <= large."""
    frac = side / image_size
    return "small" if frac < SIZE_BOUNDS[0] else "medium" if frac < SIZE_BOUNDS[1] else "large"


@dataclass(frozen=True)
class DetectedObject:
    """One object the judge found. Pixel units at 64x64; box = (x0, y0, x1, y1), x1/y1 exclusive."""

    color: str
    shape: str
    size_class: str
    box: tuple[int, int, int, int]
    area: int  # ink pixels in the component
    center: tuple[float, float]  # bounding-box centre (x, y), y down
    side: float  # estimated larger bounding-box side, px
    shape_scores: dict[str, float] = field(compare=False)
    rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)  # median colour of the core

    def describe(self, with_size: bool = False) -> str:
        """Its name, e.g. "red circle", or "large red circle" with_size."""
        return f"{self.size_class} {self.color} {self.shape}" if with_size else self.label()

    def label(self) -> str:
        """Colour and shape, e.g. "red circle"."""
        return f"{self.color} {self.shape}"


def to_judge_image(image: Image.Image | np.ndarray) -> np.ndarray:
    """Any PIL image (or (H, W, 3) uint8 array) -> (64, 64, 3) float32 RGB, bicubic if resized."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent pixels are background: composite on the spec's white canvas.
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba)
    image = image.convert("RGB")
    if image.size != (JUDGE_SIZE, JUDGE_SIZE):
        image = image.resize((JUDGE_SIZE, JUDGE_SIZE), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float32)


def detect_objects(image: Image.Image | np.ndarray) -> list[DetectedObject]:
    """The objects in an image per the spec's judging steps 1-5, ordered by their topmost pixel."""
    rgb = to_judge_image(image)  # (H, W, 3)
    s = JUDGE_SIZE
    ink = rgb.min(axis=2) < INK_THRESHOLD
    labels, n = ndimage.label(ink, structure=EIGHT_CONNECTED)
    if n == 0:
        return []
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    keep = [k for k in range(1, n + 1) if areas[k] >= MIN_AREA]
    if not keep:
        return []
    kept = np.where(np.isin(labels, keep), labels, 0)
    # Every pixel belongs to its nearest object: a faint edge pixel between two objects counts
    # toward the nearer one only.
    dist, (iy, ix) = ndimage.distance_transform_edt(kept == 0, return_indices=True)
    owner = kept[iy, ix]
    far = dist > BACKGROUND_RING
    deviation = 255.0 - rgb  # (H, W, 3): how far each pixel is from white
    background = deviation[far].mean(axis=0) if far.any() else np.zeros(3, np.float32)
    slices = ndimage.find_objects(labels)
    found = []
    for k in keep:
        ys, xs = slices[k - 1]
        y0, y1, x0, x1 = ys.start, ys.stop, xs.start, xs.stop
        # Colour: median of the core, eroded with the same 8-neighbourhood that defines objects.
        wy0, wx0 = max(0, y0 - 1), max(0, x0 - 1)
        comp = labels[wy0 : y1 + 1, wx0 : x1 + 1] == k
        core = ndimage.binary_erosion(comp, structure=EIGHT_CONNECTED)
        pixels = rgb[wy0 : y1 + 1, wx0 : x1 + 1][core if core.sum() >= MIN_CORE else comp]
        median = np.median(pixels, axis=0)
        color = nearest_color(median)
        # Ink coverage of each pixel: its deviation from white projected on the palette colour's.
        ref = 255.0 - _PALETTE_RGB[_PALETTE.index(color)]
        window = (max(0, x0 - MASS_RING), max(0, y0 - MASS_RING))
        window += (min(s, x1 + MASS_RING), min(s, y1 + MASS_RING))
        wx0, wy0, wx1, wy1 = window
        cover = (deviation[wy0:wy1, wx0:wx1] - background) @ ref / (ref @ ref)  # (h, w)
        mine = (owner[wy0:wy1, wx0:wx1] == k) & (dist[wy0:wy1, wx0:wx1] <= MASS_RING)
        cover = np.where(mine, cover, 0.0)
        # Unclipped mass: noise and JPEG ringing average out; clipping would bias it upward.
        mass = max(float(cover.sum()), float(areas[k]) / 2)
        soft = np.clip(cover, 0.0, 1.0)
        gy, gx = np.mgrid[wy0:wy1, wx0:wx1] + 0.5  # pixel centres
        weight = soft.sum() or 1.0
        centroid = np.array([(soft * gx).sum(), (soft * gy).sum()]) / weight
        shape, side, scores = _classify_shape(soft, mass, centroid, window)
        side = _side(side, max(x1 - x0, y1 - y0), s)
        found.append(
            DetectedObject(
                color=color,
                shape=shape,
                size_class=size_class(side, s),
                box=(x0, y0, x1, y1),
                area=int(areas[k]),
                center=((x0 + x1) / 2, (y0 + y1) / 2),
                side=side,
                shape_scores=scores,
                rgb=(float(median[0]), float(median[1]), float(median[2])),
            )
        )
    return found


def _classify_shape(
    soft: np.ndarray, mass: float, centroid: np.ndarray, window: tuple[int, int, int, int]
) -> tuple[str, float, dict[str, float]]:
    """(best shape, its fitted larger side in px, correlation per shape) for coverage `soft`."""
    scores, sides = {}, {}
    for shape in SHAPES:
        template, sides[shape] = _fitted_template(shape, mass, centroid, window)
        scores[shape] = _correlation(soft, template)
    best = max(scores, key=scores.__getitem__)
    return best, sides[best], scores


def _side(fitted: float, box_side: int, image_size: int) -> float:
    """Larger box side: the fitted template's, unless the pixel box is clearly larger.

    A drawn shape's ink mass fixes its size to a fraction of a pixel whatever the antialiasing or
    blur; a shape stretched away from its proportions (a model's oval circle) has a larger box
    than its mass implies, and then the pixel box, less its possible overshoot, is the better bound.
    """
    return max(fitted, box_side - BBOX_SLACK * image_size)


# ---------------------------------------------------------------------------------------------
# Judging


@dataclass(frozen=True)
class Judgement:
    """The verdict on one image: correct or not, why, and what the judge saw."""

    correct: bool
    reason: str
    objects: tuple[DetectedObject, ...]
    scene: SceneSpec


def _fits(spec: ObjectSpec, obj: DetectedObject) -> bool:
    return (
        spec.color == obj.color
        and spec.shape == obj.shape
        and (spec.size is None or spec.size == obj.size_class)
    )


def _perfect_matching(specs: Sequence[ObjectSpec], objs: Sequence[DetectedObject]) -> bool:
    """True when every spec can be paired with its own object (Kuhn's augmenting paths)."""
    if len(specs) != len(objs):
        return False
    owner: list[int | None] = [None] * len(objs)

    def augment(i: int, seen: set[int]) -> bool:
        for j, obj in enumerate(objs):
            if j not in seen and _fits(specs[i], obj):
                seen.add(j)
                if owner[j] is None or augment(owner[j], seen):  # type: ignore[arg-type]
                    owner[j] = i
                    return True
        return False

    return all(augment(i, set()) for i in range(len(specs)))


def relation_holds(relation: str, a: DetectedObject, b: DetectedObject, image_size: int) -> bool:
    """Spec: "a left of b" iff cx(a) + 0.1 S < cx(b); "a above b" iff cy(a) + 0.1 S < cy(b)."""
    margin = RELATION_MARGIN * image_size
    (ax, ay), (bx, by) = a.center, b.center
    return {
        "left of": ax + margin < bx,
        "right of": bx + margin < ax,
        "above": ay + margin < by,
        "below": by + margin < ay,
    }[relation]


def _spec_label(spec: ObjectSpec) -> str:
    return " ".join(w for w in (spec.size, spec.color, spec.shape) if w)


def _names(objs: Sequence[DetectedObject], sized: bool) -> str:
    return "[" + ", ".join(o.describe(with_size=sized) for o in objs) + "]"


def judge_objects(objects: Sequence[DetectedObject], scene: SceneSpec) -> tuple[bool, str]:
    """Spec step 6 on already detected objects: (correct, one-line reason)."""
    specs = scene.objects
    sized = any(spec.size for spec in specs)  # sizes are shown only where the prompt states one
    if len(objects) != len(specs):
        n = len(specs)
        found = _names(objects, sized) if objects else ""
        return False, f"expected {n} object{'s' * (n != 1)}, found {len(objects)} {found}".strip()
    if not _perfect_matching(specs, objects):
        asked = ", ".join(_spec_label(spec) for spec in specs)
        return False, f"expected [{asked}], found {_names(objects, sized)}"
    rel = scene.relation
    if rel is None:
        return True, "ok"
    # Any assignment consistent with colours/shapes/sizes that satisfies the relation will do:
    # two identical objects ("a red circle left of a red circle") may be taken either way round.
    rest = [spec for i, spec in enumerate(specs) if i not in (rel.subject, rel.other)]
    pairs = [
        (a, b)
        for i, a in enumerate(objects)
        for j, b in enumerate(objects)
        if i != j
        and _fits(specs[rel.subject], a)
        and _fits(specs[rel.other], b)
        and _perfect_matching(rest, [o for k, o in enumerate(objects) if k not in (i, j)])
    ]
    if any(relation_holds(rel.relation, a, b, JUDGE_SIZE) for a, b in pairs):
        return True, "ok"
    a, b = pairs[0]  # the perfect matching above guarantees one consistent pair
    return False, (
        f"the {a.label()} (centre {a.center[0]:.1f}, {a.center[1]:.1f}) is not {rel.relation} "
        f"the {b.label()} (centre {b.center[0]:.1f}, {b.center[1]:.1f})"
    )


def judge(image: Image.Image | np.ndarray, prompt_or_scene: str | SceneSpec) -> Judgement:
    """Is `image` what the prompt (text or SceneSpec) asks for? Spec "Judging an image" 1-6."""
    scene = parse_prompt(prompt_or_scene) if isinstance(prompt_or_scene, str) else prompt_or_scene
    objects = detect_objects(image)
    correct, reason = judge_objects(objects, scene)
    return Judgement(correct, reason, tuple(objects), scene)


def is_held_out(scene: SceneSpec) -> bool:
    """Whether the scene uses a held-out (colour, shape) pair: zero-shot composition."""
    return any((o.color, o.shape) in HELD_OUT for o in scene.objects)


# ---------------------------------------------------------------------------------------------
# Scores


Result = tuple[str, str, bool, bool]  # (category, language, held_out, correct)


def _summary(rows: Sequence[Result]) -> dict[str, Any]:
    """{"overall", "categories", "n"}: overall is the mean of the category accuracies present."""
    by_category: dict[str, list[bool]] = {}
    for category, _, _, correct in rows:
        by_category.setdefault(category, []).append(bool(correct))
    categories = {c: float(np.mean(by_category[c])) for c in CATEGORIES if c in by_category}
    overall = float(np.mean(list(categories.values()))) if categories else None
    return {"overall": overall, "categories": categories, "n": len(rows)}


def score(results: Iterable[Result]) -> dict[str, Any]:
    """Spec step 7: accuracy per category, overall = mean of category accuracies, per language.

    `results` are (category, language, held_out, correct) per image (several seeds per prompt).
    Held-out combinations are summarised under "heldout", never inside "overall". A category with
    no results is left out of its summary (and of that summary's overall).
    """
    rows: list[Result] = []
    for category, language, held_out, correct in results:
        if category not in CATEGORIES:
            raise InvalidInputError(
                f"unknown category {category!r}; choose from {', '.join(CATEGORIES)}"
            )
        rows.append((category, language, bool(held_out), bool(correct)))

    def with_languages(subset: list[Result]) -> dict[str, Any]:
        out = _summary(subset)
        languages = sorted({r[1] for r in subset})
        out["languages"] = {
            lang: _summary([r for r in subset if r[1] == lang]) for lang in languages
        }
        return out

    report = with_languages([r for r in rows if not r[2]])
    report["heldout"] = with_languages([r for r in rows if r[2]])
    return report
