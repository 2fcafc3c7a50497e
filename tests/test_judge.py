"""The shapes judge: right on ground truth (also degraded), wrong on wrong images, exact scores."""

import io
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from gambar.data.prompts import parse_prompt
from gambar.data.shapes import describe, render_scene, sample_scene
from gambar.data.shapes_draw import SUPERSAMPLE, draw_shape
from gambar.data.shapes_vocab import CATEGORIES, COLORS, SHAPES, SIZES
from gambar.errors import InvalidInputError
from gambar.evaluation import detect_objects, is_held_out, judge, score
from gambar.evaluation.compositional import (
    DetectedObject,
    judge_objects,
    nearest_color,
    srgb_to_lab,
)

S = 64


def draw(objects, size=S, background=(255, 255, 255)):
    """Own tiny renderer: objects = [(shape, colour, side, cx, cy)], all fractions of S."""
    f = SUPERSAMPLE
    big = Image.new("RGB", (size * f, size * f), background)
    pen = ImageDraw.Draw(big)
    for shape, color, side, cx, cy in objects:
        draw_shape(pen, shape, (cx * size, cy * size), side * size, COLORS[color], scale=f)
    return big.resize((size, size), Image.Resampling.BOX)


def blur(image):
    return image.filter(ImageFilter.GaussianBlur(0.7))


def noise(image, seed=0):
    a = np.asarray(image, dtype=np.float32)
    a = a + np.random.default_rng(seed).normal(0, 8, a.shape)
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))


def jpeg(image):
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=75)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def scenes(n, seed, size=S):
    """n generator scenes, all categories equally, held-out pairs included, with their images."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        scene = sample_scene(rng, allow_held_out=True, categories=[CATEGORIES[i % 5]])
        out.append((scene, render_scene(scene, rng, size)[0]))
    return out


GROUND_TRUTH = scenes(60, seed=1)


# ---------------------------------------------------------------------------------------------
# Ground truth is judged correct


@pytest.mark.parametrize("language", ["en", "id", None])
def test_ground_truth_is_correct(language):
    """Every category, by SceneSpec and by canonical prompt in both languages."""
    for scene, image in GROUND_TRUTH:
        prompt = scene if language is None else describe(scene, language)
        verdict = judge(image, prompt)
        assert verdict.correct, (prompt, verdict.reason)


def test_own_renderer_scenes_are_correct():
    """Independent of shapes.py: hand-placed scenes of each category."""
    cases = [
        ("a red circle", [("circle", "red", 0.26, 0.5, 0.5)]),
        ("three blue stars", [("star", "blue", 0.26, x, 0.3) for x in (0.2, 0.5, 0.8)]),
        (
            "a pink heart and a green square",
            [("heart", "pink", 0.26, 0.3, 0.6), ("square", "green", 0.26, 0.7, 0.3)],
        ),
        (
            "a black diamond to the left of an orange triangle",
            [("diamond", "black", 0.26, 0.25, 0.5), ("triangle", "orange", 0.26, 0.7, 0.55)],
        ),
        (
            "a purple square above a yellow star",
            [("square", "purple", 0.26, 0.5, 0.25), ("star", "yellow", 0.26, 0.45, 0.75)],
        ),
        ("a large yellow triangle", [("triangle", "yellow", 0.36, 0.4, 0.6)]),
        ("sebuah lingkaran hijau kecil", [("circle", "green", 0.18, 0.8, 0.2)]),
        (
            "empat hati merah muda",
            [("heart", "pink", 0.26, x, y) for x in (0.25, 0.75) for y in (0.25, 0.75)],
        ),
    ]
    for prompt, objects in cases:
        verdict = judge(draw(objects), prompt)
        assert verdict.correct, (prompt, verdict.reason)


@pytest.mark.parametrize("size", [32, 128])
def test_other_canvas_sizes_are_resized(size):
    for scene, image in scenes(10, seed=size, size=size):
        if size == 32 and any(o.size == "small" and o.shape == "star" for o in scene.objects):
            continue  # a 6 px star is not a star any more; 32 px is for counts and layout
        assert image.size == (size, size)
        assert judge(image, scene).correct, describe(scene, "en")


def test_transparent_background_is_white():
    image = draw([("star", "blue", 0.26, 0.5, 0.5)]).convert("RGBA")
    a = np.asarray(image).copy()
    white = (a[..., :3] == 255).all(-1)
    a[white] = (0, 0, 0, 0)  # transparent black: background once composited on white
    assert judge(Image.fromarray(a), "a blue star").correct


# ---------------------------------------------------------------------------------------------
# Wrong images are judged incorrect


def _base():
    return [("circle", "red", 0.26, 0.25, 0.5), ("square", "blue", 0.26, 0.75, 0.5)]


PROMPT = "a red circle to the left of a blue square"


def test_base_image_is_correct():
    assert judge(draw(_base()), PROMPT).correct


@pytest.mark.parametrize(
    ("objects", "prompt", "needle"),
    [
        (
            [("circle", "green", 0.26, 0.25, 0.5), ("square", "blue", 0.26, 0.75, 0.5)],
            PROMPT,
            "green circle",
        ),  # wrong colour
        (
            [("heart", "red", 0.26, 0.25, 0.5), ("square", "blue", 0.26, 0.75, 0.5)],
            PROMPT,
            "red heart",
        ),  # wrong shape
        (
            [("circle", "red", 0.26, 0.75, 0.5), ("square", "blue", 0.26, 0.25, 0.5)],
            PROMPT,
            "is not left of",
        ),  # swapped relation
        (
            [("circle", "red", 0.26, 0.5, 0.2), ("square", "blue", 0.26, 0.5, 0.8)],
            PROMPT,
            "is not left of",
        ),  # above instead of left of
        (
            _base() + [("star", "yellow", 0.18, 0.5, 0.85)],
            PROMPT,
            "expected 2 objects, found 3",
        ),  # extra object
        (
            [("star", "blue", 0.26, x, 0.5) for x in (0.2, 0.5)],
            "three blue stars",
            "expected 3 objects, found 2",
        ),  # wrong count
        (
            [("star", "blue", 0.26, x, 0.5) for x in (0.2, 0.5, 0.8)],
            "two blue stars",
            "expected 2 objects, found 3",
        ),
        (
            [("triangle", "yellow", 0.18, 0.5, 0.5)],
            "a large yellow triangle",
            "small yellow triangle",
        ),  # wrong size
        (
            [("triangle", "yellow", 0.36, 0.5, 0.5)],
            "a small yellow triangle",
            "large yellow triangle",
        ),
        ([("circle", "pink", 0.26, 0.5, 0.5)], "a red circle", "pink circle"),  # pink is not red
        ([("circle", "red", 0.26, 0.5, 0.5)], "sebuah lingkaran merah muda", "red circle"),
        (
            [("square", "red", 0.26, 0.3, 0.5), ("square", "red", 0.26, 0.7, 0.5)],
            "a red circle and a red square",
            "red square, red square",
        ),
        ([], "a red circle", "found 0"),  # blank
    ],
)
def test_wrong_images_are_incorrect(objects, prompt, needle):
    verdict = judge(draw(objects), prompt)
    assert not verdict.correct
    assert needle in verdict.reason, verdict.reason


def test_tinted_background_is_incorrect():
    """A background with min(R, G, B) < 195 is all ink: one huge object, never the prompt's."""
    for tint in [(230, 190, 220), (180, 200, 230), (210, 210, 150)]:
        verdict = judge(draw([("circle", "red", 0.26, 0.5, 0.5)], background=tint), "a red circle")
        assert not verdict.correct, tint
        assert len(verdict.objects) == 1 and verdict.objects[0].area == S * S


def test_ink_threshold_is_the_specs():
    """Spec: min(R, G, B) >= 195 is background, so on (230, 200, 220) the circle still counts."""
    image = draw([("circle", "red", 0.26, 0.5, 0.5)], background=(230, 200, 220))
    assert judge(image, "a red circle").correct
    a = np.full((S, S, 3), 255, dtype=np.uint8)
    a[10:14, 10:14] = 195  # background by the spec's threshold, however large
    assert detect_objects(Image.fromarray(a)) == []
    a[10:14, 10:14] = 194
    assert len(detect_objects(Image.fromarray(a))) == 1


def test_specks_are_ignored():
    image = draw([("circle", "red", 0.26, 0.5, 0.5)])
    a = np.asarray(image).copy()
    a[2:5, 2:5] = (0, 0, 0)  # 9 px < 12 px: a speck
    assert judge(Image.fromarray(a), "a red circle").correct
    a[2:6, 2:6] = (0, 0, 0)  # 16 px: an object
    assert not judge(Image.fromarray(a), "a red circle").correct


def test_relation_margin_is_exact():
    """Spec: "A left of B" iff cx(A) + 0.1 S < cx(B), with bounding-box centres."""

    def obj(x0, y0):
        return DetectedObject(
            "red",
            "circle",
            "medium",
            (x0, y0, x0 + 16, y0 + 16),
            200,
            (x0 + 8.0, y0 + 8.0),
            16.0,
            {},
        )

    scene = parse_prompt("a red circle left of a red circle")
    assert judge_objects([obj(10, 20), obj(17, 20)], scene)[0]  # 7 px > 6.4 px
    assert not judge_objects([obj(10, 20), obj(16, 20)], scene)[0]  # 6 px
    above = parse_prompt("a red circle above a red circle")
    assert judge_objects([obj(20, 40), obj(20, 33)], above)[0]  # either one may be "A"
    assert not judge_objects([obj(20, 40), obj(20, 34)], above)[0]


# ---------------------------------------------------------------------------------------------
# Robustness and the shape/colour/size classifiers


@pytest.mark.parametrize("degrade", [blur, noise, jpeg], ids=["blur0.7", "noise8", "jpeg75"])
def test_degraded_ground_truth_stays_correct(degrade):
    correct = [judge(degrade(image), scene).correct for scene, image in GROUND_TRUTH]
    accuracy = float(np.mean(correct))
    print(f"{degrade.__name__}: accuracy {accuracy:.3f} on {len(correct)} images")
    assert accuracy >= 0.9


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("shape", SHAPES)
def test_shape_and_size_confusion(shape, size):
    """Each shape at each size (jitter extremes, several colours/places) is classified right."""
    rng = np.random.default_rng(SHAPES.index(shape))
    for k, jitter in enumerate((0.9, 1.0, 1.1, 0.9, 1.1)):
        color = list(COLORS)[(k + SHAPES.index(shape)) % len(COLORS)]
        cx, cy = rng.uniform(0.3, 0.7, 2)
        image = draw([(shape, color, SIZES[size] * jitter, cx, cy)])
        for variant in (image, blur(image)):
            (found,) = detect_objects(variant)
            assert (found.shape, found.size_class, found.color) == (shape, size, color), (
                jitter,
                found.shape_scores,
            )


def test_colours_at_small_size():
    for color in COLORS:
        (found,) = detect_objects(jpeg(draw([("star", color, 0.18, 0.5, 0.5)])))
        assert found.color == color


def test_lab_reference_values():
    np.testing.assert_allclose(srgb_to_lab([255, 255, 255]), [100, 0, 0], atol=1e-3)
    np.testing.assert_allclose(srgb_to_lab([0, 0, 0]), [0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(srgb_to_lab([255, 0, 0]), [53.24, 80.09, 67.20], atol=0.02)
    np.testing.assert_allclose(srgb_to_lab([0, 0, 255]), [32.30, 79.19, -107.86], atol=0.02)
    assert nearest_color((245, 160, 200)) == "pink"  # a lighter pink stays pink, not red
    assert nearest_color((60, 60, 60)) == "black"


def test_detected_object_fields():
    (found,) = detect_objects(draw([("square", "green", 0.26, 0.5, 0.5)]))
    x0, y0, x1, y1 = found.box
    assert found.center == ((x0 + x1) / 2, (y0 + y1) / 2)
    assert abs(found.center[0] - 32) <= 1 and abs(found.side - 0.26 * S) < 1
    assert set(found.shape_scores) == set(SHAPES)
    assert 16**2 <= found.area <= 18**2  # a 16.6 px square and its antialiased rim


def test_judging_is_fast():
    images = [image for _, image in GROUND_TRUTH[:20]]
    start = time.perf_counter()
    for (scene, _), image in zip(GROUND_TRUTH, images, strict=False):
        judge(image, scene)
    assert (time.perf_counter() - start) / len(images) < 0.05  # a few ms; loose for busy CI


# ---------------------------------------------------------------------------------------------
# Scores


def test_score_means_categories_not_images():
    results = (
        [("single", "en", False, True)] * 3
        + [("single", "en", False, False)]  # 0.75
        + [("count", "en", False, True)]  # 1.0
        + [("two_objects", "id", False, False)] * 2  # 0.0
        + [("position", "id", False, True), ("position", "id", False, False)]  # 0.5
        + [("size", "en", False, True)] * 10  # 1.0
        + [("single", "en", True, False), ("count", "id", True, True)]  # held out
    )
    report = score(results)
    assert report["categories"] == {
        "single": 0.75,
        "count": 1.0,
        "two_objects": 0.0,
        "position": 0.5,
        "size": 1.0,
    }
    assert report["overall"] == pytest.approx(0.65)  # not the image mean 15/19
    assert report["n"] == 19
    en = report["languages"]["en"]
    assert en["categories"] == {"single": 0.75, "count": 1.0, "size": 1.0}
    assert en["overall"] == pytest.approx(2.75 / 3)
    assert report["languages"]["id"]["overall"] == pytest.approx(0.25)
    held = report["heldout"]
    assert held["categories"] == {"single": 0.0, "count": 1.0} and held["n"] == 2
    assert held["overall"] == pytest.approx(0.5)
    with pytest.raises(InvalidInputError):
        score([("colour", "en", False, True)])


def test_is_held_out():
    assert is_held_out(parse_prompt("a blue heart"))
    assert is_held_out(parse_prompt("a red circle and a green star"))
    assert not is_held_out(parse_prompt("a blue star and a green heart"))
