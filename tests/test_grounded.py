"""The grounded family (issue 18): shapes captions carry each object's phrase span, training
items give (caption, layout) pairs, the layout stage learns to write layouts that follow a
caption, and a layout (given or sampled) is recorded, replayed and refused in one line."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gambar
from gambar import registry
from gambar.cli import main
from gambar.data.layouts import GroundedObject, ink_box, training_layout
from gambar.data.mix import named_pairs
from gambar.data.shapes import (
    PlacedObject,
    ShapesStream,
    describe,
    describe_with_spans,
    render_scene,
    to_tensor,
)
from gambar.data.shapes_vocab import INK_THRESHOLD, Relation, SceneSpec
from gambar.data.shapes_vocab import ObjectSpec as Spec
from gambar.errors import InvalidInputError
from gambar.evaluation.compositional import relation_holds
from gambar.generators.diffusion.config import DiffusionConfig
from gambar.generators.diffusion.unet import PRESETS
from gambar.generators.grounded.grounding import GroundingConfig
from gambar.generators.grounded.model import GroundedModel
from gambar.generators.grounded.pipeline import GroundedPipeline
from gambar.generators.grounded.planner import (
    STOP,
    PlannerConfig,
    decode_numbers,
    encode_numbers,
    encode_targets,
    from_bins,
    planner_input,
    to_bins,
)
from gambar.generators.grounded.training import token_span
from gambar.inputs import MAX_LAYOUT_OBJECTS, Layout
from gambar.provenance import read_provenance
from gambar.text.frozen import load_frozen_minilm
from gambar.text.setup import TextSetup
from gambar.train.loop import train
from test_contract import FAST, TINY_RECIPES

STEPS = FAST["grounded"]["steps"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


# ---------------------------------------------------------------------------------------------
# 1. Captions and the spans of their phrases

def _check_spans(caption: str, spans: tuple[tuple[int, int], ...], scene: SceneSpec) -> None:
    """Each object's span names its colour and shape and nothing else; identical objects of a
    count share one span; the words outside every span name no object."""
    assert len(spans) == len(scene.objects), caption
    for (start, end), obj in zip(spans, scene.objects, strict=True):
        said = caption[start:end]
        assert 0 <= start < end <= len(caption) and said == said.strip(), (caption, said)
        assert named_pairs(said) == {(obj.color, obj.shape)}, (caption, said)
    for j in range(len(spans)):
        for k in range(j + 1, len(spans)):
            if scene.relation is None and scene.objects[j] == scene.objects[k]:
                assert spans[j] == spans[k], caption  # "three blue stars": one phrase
            else:
                assert spans[j][1] <= spans[k][0] or spans[k][1] <= spans[j][0], caption
    rest = list(caption)
    for start, end in spans:
        rest[start:end] = " " * (end - start)
    assert named_pairs("".join(rest)) == set(), caption


def test_every_object_span_names_its_colour_and_shape():
    stream = ShapesStream(0)
    languages = Counter()
    for i in range(300):
        sample = stream[i]
        languages[sample.language] += 1
        _check_spans(sample.caption, sample.spans, sample.scene)
        assert sample.labels()["spans"] == [list(s) for s in sample.spans]
        for language in ("en", "id"):  # the canonical caption, both languages
            caption, spans = describe_with_spans(sample.scene, language)
            assert caption == describe(sample.scene, language)
            _check_spans(caption, spans, sample.scene)
    assert set(languages) == {"en", "id"}
    assert Counter(stream[i].scene.category for i in range(300)).keys() >= {"count", "position"}


def test_spans_leave_the_captions_and_their_draws_as_they_were():
    stream = ShapesStream(0)
    for i in range(300):
        sample = stream[i]
        a, b = np.random.default_rng([7, i]), np.random.default_rng([7, i])
        assert describe(sample.scene, sample.language, a) == describe_with_spans(
            sample.scene, sample.language, b)[0]
        assert a.bit_generator.state == b.bit_generator.state  # the same draws, no more
    # sha256 of ShapesStream(0)'s captions 0..299, as f145355 (before spans existed) wrote them
    joined = "\n".join(stream[i].caption for i in range(300))
    assert hashlib.sha256(joined.encode()).hexdigest() == (
        "553bd2fdcd5293891bf1c3bde470036d3e852899204d0562c1958709e9ff1cde")


# ---------------------------------------------------------------------------------------------
# 2. Training layouts

def test_a_shapes_item_gives_one_object_per_scene_object():
    stream = ShapesStream(3, size=64)
    for i in range(60):
        sample = stream[i]
        labels = sample.labels()
        layout = training_layout(to_tensor(sample.image), sample.caption, labels)
        expected = sorted((tuple(span), tuple(v / 64 for v in box))
                          for span, box in zip(labels["spans"], labels["boxes"], strict=True))
        got = sorted((o.span, o.box) for o in layout)
        assert [s for s, _ in got] == [s for s, _ in expected], sample.caption
        for (_, box), (_, want) in zip(got, expected, strict=True):
            assert box == pytest.approx(want) and all(0.0 <= v <= 1.0 for v in box)
        # written in the order the phrases appear: what the layout stage learns to follow
        assert [o.span[0] for o in layout] == sorted(o.span[0] for o in layout)


def test_an_item_without_spans_is_one_object_over_its_ink():
    image = torch.ones(3, 32, 32)  # white in [-1, 1]
    image[:, 8:20, 4:12] = -1.0  # a black square: columns 4..11, rows 8..19
    faint = (INK_THRESHOLD + 10) / 127.5 - 1  # lighter than the judge's ink threshold
    image[:, 28:30, 28:30] = faint
    caption = "grinning face"
    layout = training_layout(image, caption, {"caption": caption, "category": "emoji"})
    assert layout == (GroundedObject((0, len(caption)), (4 / 32, 8 / 32, 12 / 32, 20 / 32)),)
    assert ink_box(torch.ones(3, 16, 16)) == (0.0, 0.0, 1.0, 1.0)  # nothing inked: everything


# ---------------------------------------------------------------------------------------------
# 3. The layout stage

@pytest.mark.parametrize("bins", [4, 10, 32, 64, 100])
def test_bins_round_trip_covers_the_box(bins):
    rng = np.random.default_rng(bins)
    boxes = [(0.0, 0.0, 1.0, 1.0), (0.25, 0.5, 0.5, 0.75), (0.3, 0.3, 0.3001, 0.31)]
    for _ in range(300):
        x, y = np.sort(rng.random(2)), np.sort(rng.random(2))
        boxes.append((x[0], y[0], x[1], y[1]))
    eps = 1e-12
    for box in boxes:
        edges = to_bins(box, bins)
        assert all(0 <= e < bins for e in edges)
        back = from_bins(edges, bins)
        assert back[0] <= box[0] + eps and back[1] <= box[1] + eps
        assert back[2] >= box[2] - eps and back[3] >= box[3] - eps
        assert all(abs(a - b) <= 1 / bins + eps for a, b in zip(back, box, strict=True))
        if bins & (bins - 1) == 0:  # k / bins is exact in binary: a box on the grid stays put
            assert to_bins(back, bins) == edges


def test_encode_targets_writes_pointers_then_edges_then_stop():
    cfg = PlannerConfig(text_dim=8, width=8, layers=1, heads=1, max_objects=2, bins=4)
    a, b = (1, 2, (0.0, 0.0, 0.5, 0.5)), (4, 4, (0.5, 0.25, 1.0, 1.0))
    # pointers are memory slots (token + 1: slot 0 is STOP); edges are quarter classes
    assert encode_targets([a, b], cfg) == [2, 3, 0, 0, 1, 1, 5, 5, 2, 1, 3, 3, STOP]
    assert encode_targets([a, b, a], cfg) == encode_targets([a, b], cfg)  # max_objects
    assert encode_targets([], cfg) == [STOP]


def test_relative_boxes_round_trip_within_a_bin():
    cfg = PlannerConfig(bins=64, boxes="relative")
    rng = np.random.default_rng(0)
    for _ in range(200):
        boxes = []
        for _ in range(int(rng.integers(1, 5))):
            x, y = np.sort(rng.random(2)), np.sort(rng.random(2))
            boxes.append((x[0], y[0], x[1], y[1]))
        numbers = encode_numbers(boxes, cfg)
        for slot, nums in enumerate(numbers):
            limits = (64, 64) if slot == 0 else (128, 128)
            assert all(0 <= n < c for n, c in zip(nums, (*limits, 64, 64), strict=True))
        back = decode_numbers(numbers, cfg)
        for box, got in zip(boxes, back, strict=True):
            centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
            got_centre = ((got[0] + got[2]) / 2, (got[1] + got[3]) / 2)
            # offsets are taken from the decoded previous centre: errors never add up
            if 0.0 < got[0] and got[2] < 1.0:  # unless clipped at the border
                assert abs(centre[0] - got_centre[0]) <= 1 / 64 + 1e-9
            assert all(0.0 <= v <= 1.0 for v in got) and got[0] < got[2] and got[1] < got[3]
    # the first object's centre is absolute, a later one's an offset: a shifted pair of boxes
    # keeps the second object's numbers (to the bin the first centre was rounded to)
    a = encode_numbers([(0.1, 0.1, 0.3, 0.3), (0.5, 0.1, 0.7, 0.3)], cfg)
    b = encode_numbers([(0.2, 0.4, 0.4, 0.6), (0.6, 0.4, 0.8, 0.6)], cfg)
    assert a[0] != b[0] and a[1][2:] == b[1][2:]
    assert all(abs(x - y) <= 1 for x, y in zip(a[1][:2], b[1][:2], strict=True))


def test_token_span_maps_characters_to_tokens():
    offsets = [(0, 0), (0, 1), (2, 5), (6, 12), (0, 0)]  # [CLS] a red circle [SEP]
    assert token_span(offsets, (0, 12)) == (1, 3)
    assert token_span(offsets, (2, 12)) == (2, 3)
    assert token_span(offsets, (3, 4)) == (2, 2)  # inside a word: the word's token
    assert token_span(offsets, (13, 20)) is None  # cut off by the encoder's max length


# (scene, language) -> the canonical caption the layout stage learns; relations, counts, a size
# and Indonesian among them.
RED_CIRCLE, BLUE_SQUARE = Spec("red", "circle"), Spec("blue", "square")
BLUE_STAR = Spec("blue", "star")
OVERFIT_SCENES = [
    (SceneSpec((RED_CIRCLE, BLUE_SQUARE), Relation(0, "above", 1), "position"), "en"),
    (SceneSpec((BLUE_STAR,) * 3, None, "count"), "en"),  # "three blue stars"
    # "lingkaran merah di sebelah kiri persegi biru"
    (SceneSpec((RED_CIRCLE, BLUE_SQUARE), Relation(0, "left of", 1), "position"), "id"),
    (SceneSpec((Spec("yellow", "triangle", "large"),), None, "size"), "en"),
    (SceneSpec((Spec("green", "square"), Spec("purple", "heart")), None, "two_objects"), "en"),
    (SceneSpec((BLUE_STAR,) * 2, None, "count"), "id"),  # "dua bintang biru"
]
LAYOUTS_PER_CAPTION = 4  # rendered placements per caption: what the stage may vary among
SIDE = 64


def _pair(phrase: str) -> tuple[str, str] | None:
    pairs = named_pairs(phrase)
    return next(iter(pairs)) if len(pairs) == 1 else None


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return w * h / (area - w * h)


def _placed(box: tuple[float, float, float, float]) -> PlacedObject:
    """A planned box in the judge's pixel units, for gambar.evaluation's relation rule."""
    return PlacedObject("", "", "", 0.0, tuple(v * SIDE for v in box))  # type: ignore[arg-type]


# The first layout stage's form, and the shipped one (relative boxes, learned word pieces too).
PLANNERS = {"edges": {}, "relative": {"boxes": "relative", "reads": "both", "coord_features": 4,
                                      "sentence": True}}


@pytest.fixture(scope="module", params=sorted(PLANNERS))
def overfit_planner(request) -> tuple[GroundedPipeline, list[tuple[SceneSpec, str, str]]]:
    """A pipeline whose layout stage was trained on OVERFIT_SCENES' captions only."""
    torch.manual_seed(0)  # module-scoped: runs before the per-test seed
    text = TextSetup.build("minilm")
    frozen = text.frozen
    cfg = PlannerConfig(width=64, layers=2, heads=4, max_objects=4, bins=32,
                        **PLANNERS[request.param])
    model = GroundedModel(replace(PRESETS["unet-tiny"], text_dim=frozen.dim),
                          GroundingConfig(channels=4), cfg)
    captions = [describe_with_spans(scene, language) for scene, language in OVERFIT_SCENES]
    offsets = frozen.offsets([c for c, _ in captions])
    rows, targets = [], []
    for i, ((scene, _), (caption, spans)) in enumerate(zip(OVERFIT_SCENES, captions,
                                                              strict=True)):
        for k in range(LAYOUTS_PER_CAPTION):
            image, objects, _ = render_scene(scene, np.random.default_rng([i, k]), SIDE)
            labels = {"spans": spans, "boxes": [o.box for o in objects], "image_size": SIDE}
            layout = training_layout(to_tensor(image), caption, labels)
            targets.append(encode_targets(
                [(*token_span(offsets[i], o.span), o.box) for o in layout], cfg))
            rows.append(i)
    states, mask = planner_input(frozen, [c for c, _ in captions], cfg)
    states, mask = states[rows], mask[rows]
    planner = model.planner
    opt = torch.optim.Adam(planner.parameters(), lr=3e-3)
    for _ in range(250):
        loss = planner.loss(states, mask, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    pipe = GroundedPipeline(model, text, DiffusionConfig(image_size=32))
    return pipe, [(scene, lang, caption) for (scene, lang), (caption, _) in
                  zip(OVERFIT_SCENES, captions, strict=True)]


def test_the_layout_stage_overfits_a_handful_of_captions(overfit_planner):
    pipe, scenes = overfit_planner
    captions = [c for _, _, c in scenes]
    assert "a red circle above a blue square" in captions and "three blue stars" in captions
    assert "lingkaran merah di sebelah kiri persegi biru" in captions
    for scene, _, caption in scenes:
        boxes_by_seed = set()
        for seed in range(6):
            layout = pipe.plan(caption, seed, temperature=1.0)
            where = f"{caption!r} seed {seed}: {layout.to_json()}"
            assert len(layout.objects) == len(scene.objects), where
            assert Layout.from_json(layout.to_json()) == layout, where  # a valid --layout
            pairs = [_pair(b.phrase) for b in layout.objects]
            assert Counter(pairs) == Counter((o.color, o.shape) for o in scene.objects), where
            for b in layout.objects:
                assert b.phrase in caption, where
            if scene.relation is not None:
                rel = scene.relation
                box = {p: (b.x0, b.y0, b.x1, b.y1) for p, b in zip(pairs, layout.objects,
                                                                      strict=True)}
                a = scene.objects[rel.subject]
                b = scene.objects[rel.other]
                assert relation_holds(rel.relation, _placed(box[a.color, a.shape]),
                                      _placed(box[b.color, b.shape]), SIDE), where
            boxes = [(b.x0, b.y0, b.x1, b.y1) for b in layout.objects]
            # the data keeps boxes 0.03 S apart; the stage must not stack a count's objects
            assert all(_iou(p, q) < 0.1 for i, p in enumerate(boxes) for q in boxes[i + 1:]), where
            boxes_by_seed.add(tuple(boxes))
        assert len(boxes_by_seed) > 1, f"{caption!r}: every seed drew the same boxes"


def test_temperature_zero_is_the_likeliest_layout_whatever_the_seed(overfit_planner):
    pipe, scenes = overfit_planner
    for _, _, caption in scenes[:3]:
        first = pipe.plan(caption, 0, temperature=0.0)
        assert all(pipe.plan(caption, s, temperature=0.0) == first for s in (1, 2))
    assert pipe.plan("   ", 0) == Layout(())  # an empty prompt plans nothing


# ---------------------------------------------------------------------------------------------
# 4. Layouts given and sampled: recorded, replayed, independent of the batch

GIVEN = [{"phrase": "a red circle", "box": [0.1, 0.1, 0.45, 0.45]},
         {"phrase": "a blue square", "box": [0.55, 0.5, 0.9, 0.9]}]
PROMPT = "a red circle and a blue square"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    recipe = TINY_RECIPES["grounded"]()
    recipe["train"]["run_dir"] = str(tmp_path_factory.mktemp("grounded") / "run")
    return train(registry.task_factory("grounded"), recipe, progress=False)


@pytest.fixture(scope="module")
def pipe(model_dir):
    return gambar.load(model_dir)


def test_a_given_layout_is_drawn_and_recorded(pipe):
    layout = Layout.from_json(GIVEN)
    (gen,) = pipe.generate([PROMPT], seeds=[4], inputs={"layout": layout}, progress=False,
                           steps=STEPS)
    assert gen.provenance["layout"] == GIVEN and gen.provenance["layout_source"] == "given"
    # the image stage reads it: another layout, same seed, other pixels
    moved = Layout.from_json([{**GIVEN[0], "box": [0.5, 0.05, 0.95, 0.4]}, GIVEN[1]])
    (other,) = pipe.generate([PROMPT], seeds=[4], inputs={"layout": moved}, progress=False,
                             steps=STEPS)
    assert not np.array_equal(pixels(gen.image), pixels(other.image))


def test_a_sampled_layout_is_recorded_as_the_one_drawn(pipe):
    (gen,) = pipe.generate([PROMPT], seeds=[2], progress=False, steps=STEPS)
    prov = gen.provenance
    assert prov["layout_source"] == "sampled"
    assert prov["layout"] == pipe.plan(PROMPT, 2, 1.0).to_json() and prov["layout"]
    # drawing with the recorded layout given gives the very same image
    (again,) = pipe.generate([PROMPT], seeds=[2], inputs={"layout": Layout.from_json(
        prov["layout"])}, progress=False, steps=STEPS)
    assert np.array_equal(pixels(gen.image), pixels(again.image))


def test_a_seed_gives_one_layout_at_any_batch_size(pipe):
    prompts = [PROMPT, "three blue stars", "persegi hijau di atas hati ungu"]
    batch = pipe.generate(prompts, seeds=[5, 6, 7], batch_size=3, progress=False, steps=STEPS)
    layouts = [g.provenance["layout"] for g in batch]
    for k, prompt in enumerate(prompts):
        (alone,) = pipe.generate([prompt], seeds=[5 + k], batch_size=1, progress=False,
                                 steps=STEPS)
        assert alone.provenance["layout"] == layouts[k], prompt
        assert np.array_equal(pixels(alone.image), pixels(batch[k].image)), prompt
    assert pipe.plan(PROMPT, 5) != pipe.plan(PROMPT, 6)  # and seeds differ


def test_img2img_at_strength_zero_and_one_holds_for_the_grounded_family(pipe):
    """The subclass draws through DiffusionPipeline's loop: strength 0 is the init image,
    strength 1 the image drawn without it (the layout kept in both)."""
    layout = Layout.from_json(GIVEN)
    (plain,) = pipe.generate([PROMPT], seeds=[4], inputs={"layout": layout}, progress=False,
                             steps=STEPS)
    init = Image.effect_noise(plain.image.size, 64).convert("RGB")
    for strength, expected in ((0.0, init), (1.0, plain.image)):
        (gen,) = pipe.generate([PROMPT], seeds=[4], inputs={"layout": layout, "init": init},
                               strength=strength, progress=False, steps=STEPS)
        assert np.array_equal(pixels(gen.image), pixels(expected)), strength
        assert gen.provenance["layout"] == GIVEN and gen.provenance["strength"] == strength


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _generate(model_dir: Path, *args: str) -> int:
    return main(["generate", "--model", str(model_dir), "-q", *args])


def test_the_cli_draws_a_given_layout_and_replays_it(model_dir, in_tmp, capsys):
    Path("f.json").write_text(json.dumps(GIVEN))
    assert _generate(model_dir, PROMPT, "--seed", "3", "-o", "a.png", "--layout", "f.json",
                     "--steps", str(STEPS)) == 0
    prov = read_provenance(in_tmp / "a.png")
    assert prov["layout"] == GIVEN and prov["layout_source"] == "given"
    assert _generate(model_dir, "--replay", "a.png", "-o", "b.png", "--layout", "f.json") == 0
    assert np.array_equal(pixels(Image.open("a.png")), pixels(Image.open("b.png")))
    capsys.readouterr()
    # without the layout it was drawn from, a replay cannot be exact: refused in one line
    assert _generate(model_dir, "--replay", "a.png", "-o", "c.png") == 2
    assert "--layout" in one_line_error(capsys) and not Path("c.png").exists()


def test_the_cli_replays_a_sampled_layout(model_dir, in_tmp):
    assert _generate(model_dir, PROMPT, "--seed", "8", "-o", "a.png", "--steps",
                     str(STEPS)) == 0
    prov = read_provenance(in_tmp / "a.png")
    assert prov["layout_source"] == "sampled" and prov["layout"]
    assert _generate(model_dir, "--replay", "a.png", "-o", "b.png") == 0
    assert read_provenance(in_tmp / "b.png")["layout"] == prov["layout"]
    assert np.array_equal(pixels(Image.open("a.png")), pixels(Image.open("b.png")))


# ---------------------------------------------------------------------------------------------
# 5. A bad layout file is one line

BOX = [0.1, 0.1, 0.5, 0.5]


@pytest.mark.parametrize(("content", "message"), [
    ([{"phrase": "a red circle", "box": [0.5, 0.5, 1.5, 1.0]}], "must satisfy 0 <= x0 < x1 <= 1"),
    ([{"phrase": "a red circle", "box": [-0.1, 0.0, 0.5, 0.5]}], "must satisfy"),
    ([{"phrase": "a red circle", "box": BOX, "colour": "red"}], "unknown key 'colour'"),
    ([{"phrase": "x", "box": BOX}] * (MAX_LAYOUT_OBJECTS + 1),
     f"1 to {MAX_LAYOUT_OBJECTS} objects"),
    ({"phrase": "a red circle", "box": BOX}, "must be a JSON list"),
    ("[{\"phrase\": ", "not valid JSON"),
])
def test_a_bad_layout_file_is_one_line(model_dir, in_tmp, capsys, content, message):
    Path("f.json").write_text(content if isinstance(content, str) else json.dumps(content))
    assert _generate(model_dir, PROMPT, "--seed", "1", "-o", "a.png", "--layout", "f.json",
                     "--steps", str(STEPS)) == 2
    err = one_line_error(capsys)
    assert message in err and "--layout f.json" in err
    assert not Path("a.png").exists()


def test_the_largest_layout_is_drawn(model_dir, in_tmp):
    objects = [{"phrase": "" if k % 2 else "a blue star", "box": [k / 16, 0.0, (k + 1) / 16, 1.0]}
               for k in range(MAX_LAYOUT_OBJECTS)]
    Path("f.json").write_text(json.dumps(objects))
    assert _generate(model_dir, PROMPT, "--seed", "1", "-o", "a.png", "--layout", "f.json",
                     "--steps", str(STEPS)) == 0
    assert read_provenance(in_tmp / "a.png")["layout"] == objects


# ---------------------------------------------------------------------------------------------
# 6. Configuration mistakes

def test_a_layout_stage_run_keeps_the_image_stage_it_starts_from(model_dir, tmp_path):
    """[init] image_from: the image stage is taken frozen, only the layout stage trains."""
    recipe = TINY_RECIPES["grounded"]()
    recipe["init"] = {"image_from": str(model_dir)}
    recipe["data"]["seed"] = 5  # else its layout stage retraces the source run's exactly
    recipe["train"]["run_dir"] = str(tmp_path / "run")
    out = train(registry.task_factory("grounded"), recipe, progress=False)
    before, after = gambar.load(model_dir).grounded, gambar.load(out).grounded
    for (name, x), (_, y) in zip(before.image.state_dict().items(),
                                 after.image.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    assert any(not torch.equal(x, y) for x, y in zip(before.planner.state_dict().values(),
                                                     after.planner.state_dict().values(),
                                                     strict=True))
    log = (tmp_path / "run" / "log.jsonl").read_text()
    assert "loss/planner" in log and "loss/image" not in log

def test_grounding_needs_channels_or_tokens():
    with pytest.raises(ValueError, match="channels or grounding tokens"):
        GroundingConfig(channels=0, tokens=False)
    with pytest.raises(ValueError, match="0 or at least 2"):
        GroundingConfig(channels=1)
    GroundingConfig(channels=0, tokens=True)  # tokens alone are a grounding
    GroundingConfig(channels=4, tokens=False)  # and so are channels alone
    with pytest.raises(ValueError, match="grounding.phrase must be one of sentence, words"):
        GroundingConfig(phrase="letters")


def test_word_bag_phrases_are_their_words_in_any_order():
    """`phrase = "words"` embeds a phrase as its words alone: order and context do not count,
    so an unseen colour-shape pair moves by the same step as a seen one."""
    from gambar.generators.grounded.grounding import PhraseCache

    words = PhraseCache(load_frozen_minilm(), "words")
    sentence = PhraseCache(load_frozen_minilm(), "sentence")
    a, b = words(["a purple star", "star purple a"])
    assert torch.allclose(a, b) and torch.allclose(a.norm(), torch.tensor(1.0))
    s_a, s_b = sentence(["a purple star", "star purple a"])
    assert not torch.allclose(s_a, s_b) and not torch.allclose(a, s_a)
    ps, pc, rs, rc = words(["a purple star", "a purple circle", "a red star", "a red circle"])
    step = torch.nn.functional.cosine_similarity(ps - pc, rs - rc, dim=0)
    assert step > 0.99


def test_the_phrase_embedding_is_saved_with_the_model(tmp_path):
    recipe = TINY_RECIPES["grounded"]()
    recipe["grounding"] = {**recipe.get("grounding", {}), "phrase": "words"}
    recipe["train"]["run_dir"] = str(tmp_path / "run")
    recipe["train"]["steps"] = 1
    loaded = gambar.load(train(registry.task_factory("grounded"), recipe, progress=False))
    assert loaded.phrases.mode == "words"
    assert loaded.grounded.image.grounding.cfg.phrase == "words"


@pytest.mark.parametrize(("change", "message"), [
    ({"grounding": {"channels": 0, "tokens": False}}, "channels or grounding tokens"),
    ({"planner": {"width": 30, "heads": 4}}, "must divide planner.width"),
    ({"text": {"kind": "small", "dim": 64, "depth": 2, "heads": 4, "vocab_size": 400}},
     'set \\[text\\] kind = "minilm"'),
])
def test_a_bad_grounded_recipe_is_one_line(change, message):
    recipe = {**TINY_RECIPES["grounded"](), **change}
    with pytest.raises(InvalidInputError, match=message) as err:
        registry.task_factory("grounded")(recipe)
    assert "\n" not in str(err.value)
