"""The evaluation harness end to end: judge validation through the suite, determinism, reports,
comparison and the `gambar evaluate` command."""

import io
import json
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

import gambar
from gambar.cli import main
from gambar.contrastive import PRESETS, ContrastiveModel, ContrastiveNet
from gambar.data.prompts import parse_prompt
from gambar.data.shapes_vocab import CATEGORIES, COLORS, SHAPES, ObjectSpec, Relation
from gambar.evaluation.harness import evaluate, reference_image, summarise
from gambar.evaluation.report import (
    compare_table,
    format_table,
    load_result,
    write_charts,
    write_report,
)
from gambar.evaluation.suites import load_suite
from gambar.generators.diffusion.options import DiffusionOptions
from gambar.pipeline import Generated
from gambar.text.setup import TextSetup

SUITE = load_suite("shapes-core")
PALETTE, NAMES = list(COLORS), list(SHAPES)


class RenderingPipeline:
    """A "model" that draws each prompt's scene (optionally altered, optionally degraded)."""

    family = "oracle"
    sha256 = "0" * 64
    Options = DiffusionOptions  # what its provenance's settings are read by
    inputs = frozenset()

    def __init__(self, name="oracle", alter=None, degrade=None, size=64):
        self.name, self.alter, self.degrade, self.size = name, alter, degrade, size

    def generate(self, prompts, *, seeds, progress=True, batch_size=8, **options):
        out = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            scene = parse_prompt(prompt)
            if self.alter:
                scene = self.alter(scene)
            image = reference_image(scene, seed, self.size)
            if self.degrade:
                image = self.degrade(image)
            out.append(Generated([image], {"prompt": prompt, "seed": seed, "size": self.size,
                                         "sampler": "render", "steps": 0}))
        return out


def recolour(scene):
    objs = tuple(replace(o, color=PALETTE[(PALETTE.index(o.color) + 1) % 8])
                 for o in scene.objects)
    return replace(scene, objects=objs)


def reshape(scene):
    objs = tuple(replace(o, shape=NAMES[(NAMES.index(o.shape) + 1) % 6]) for o in scene.objects)
    return replace(scene, objects=objs)


def add_object(scene):
    taken = {(o.color, o.shape) for o in scene.objects}
    extra = next(ObjectSpec(c, s, "small") for c in PALETTE for s in NAMES if (c, s) not in taken)
    return replace(scene, objects=(*scene.objects, extra))


def drop_object(scene):
    return replace(scene, objects=scene.objects[:-1], relation=None) if len(
        scene.objects) > 1 else recolour(scene)


def swap_relation(scene):
    rel = scene.relation
    if rel is None:
        return scene
    return replace(scene, relation=Relation(rel.other, rel.relation, rel.subject))


def blur(im):
    return im.filter(ImageFilter.GaussianBlur(0.7))


def noise(im):
    a = np.asarray(im, dtype=np.float64)
    a = a + np.random.default_rng(int(a.sum()) % 2**32).normal(0, 8, a.shape)
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))


def jpeg(im):
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=75)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def tiny_clip():
    torch.manual_seed(0)
    text = TextSetup.build("small", [p.prompt for p in SUITE.prompts], dim=32, depth=1, heads=2,
                           vocab_size=200)
    net = ContrastiveNet(PRESETS["clip-tiny"], text.dim, text.trainable)
    return ContrastiveModel(net, text, name="tiny-clip")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny-clip"
    tiny_clip().save(path)
    return path


# ---------------------------------------------------------------------------------------------
# The judge, validated through the suite


def test_ground_truth_scores_one_everywhere():
    result = evaluate(RenderingPipeline(), SUITE, n=2, progress=False).result
    judge = result["judge"]
    for block in (judge, judge["heldout"], *judge["languages"].values(),
                  *judge["heldout"]["languages"].values()):
        assert block["categories"] == {c: 1.0 for c in CATEGORIES}, block
    assert judge["n"] == 160 and judge["heldout"]["n"] == 40


@pytest.mark.parametrize("alter,categories", [
    (recolour, CATEGORIES), (reshape, CATEGORIES), (add_object, CATEGORIES),
    (drop_object, ("count", "two_objects", "position")), (swap_relation, ("position",)),
], ids=["colour", "shape", "extra", "missing", "relation"])
def test_wrong_images_score_zero(alter, categories):
    suite = SUITE.subset(3)
    judge = evaluate(RenderingPipeline(alter=alter), suite, n=1, progress=False).result["judge"]
    for c in categories:
        assert judge["categories"][c] == 0.0 and judge["heldout"]["categories"][c] == 0.0, c


@pytest.mark.parametrize("degrade", [blur, noise, jpeg], ids=["blur0.7", "noise8", "jpeg75"])
def test_judge_accuracy_on_degraded_images(degrade):
    """Reported, and held to a floor: the judge must read imperfect generations."""
    judge = evaluate(RenderingPipeline(degrade=degrade), SUITE, n=1,
                     progress=False).result["judge"]
    print(degrade.__name__, {c: round(v, 3) for c, v in judge["categories"].items()},
          "held-out", round(judge["heldout"]["overall"], 3))
    assert min(judge["categories"].values()) >= 0.85 and judge["overall"] >= 0.9


def test_summarise_means_categories_then_overall():
    rows = [("single", "en", False, 1.0), ("single", "en", False, 0.0), ("count", "id", False, 1.0),
            ("size", "en", True, 0.25)]
    s = summarise(rows)
    assert s["categories"] == {"single": 0.5, "count": 1.0} and s["overall"] == 0.75
    assert s["languages"]["id"]["overall"] == 1.0 and s["heldout"]["overall"] == 0.25


# ---------------------------------------------------------------------------------------------
# Figures with a contrastive model; determinism


def test_ground_truth_has_zero_fid_and_bounded_clip_figures(clip_dir):
    clip = ContrastiveModel.load(clip_dir)
    result = evaluate(RenderingPipeline(size=32), SUITE.subset(2), n=2, clip=clip,
                      progress=False).result
    # The references are these very images, each once; the generated set holds each twice (two
    # languages), which only changes the covariance's 1/(N-1) normalisation a little.
    assert result["realism"]["fid"] < 1e-2
    assert result["realism"]["features"]["sha256"] == clip.sha256
    cs = result["alignment"]["clip_score"]["overall"]
    rp = result["alignment"]["r_precision"]["overall"]
    assert 0.0 <= cs <= 2.5 and 0.0 <= rp <= 1.0
    assert result["diversity"]["feature"]["mean"] > 0
    assert {"clip_score", "r_precision_hit"} <= set(result["images"][0])


def test_evaluation_is_deterministic(tiny_model_dir, clip_dir):
    """Same model, suite, seed and contrastive model: the same numbers (loaded afresh)."""
    runs = []
    for _ in range(2):
        pipe, clip = gambar.load(tiny_model_dir), ContrastiveModel.load(clip_dir)
        result = evaluate(pipe, SUITE.subset(1), n=2, seed=3, clip=clip,
                          options={"steps": 2}, progress=False).result
        result.pop("run")
        runs.append(json.dumps(result, sort_keys=True))
    assert runs[0] == runs[1]
    other = evaluate(gambar.load(tiny_model_dir), SUITE.subset(1), n=2, seed=4,
                     clip=ContrastiveModel.load(clip_dir), options={"steps": 2},
                     progress=False).result
    other.pop("run")
    assert json.dumps(other, sort_keys=True) != runs[0]  # the seed matters


def test_records_model_suite_seeds_and_sampler(tiny_model_dir):
    pipe = gambar.load(tiny_model_dir)
    result = evaluate(pipe, SUITE.subset(1), n=2, seed=7, options={"steps": 3, "guidance": 2.0},
                      progress=False).result
    assert result["model"]["sha256"] == pipe.sha256 and result["suite"]["sha256"] == SUITE.sha256
    assert result["sampler"]["steps"] == 3 and result["sampler"]["guidance"] == 2.0
    first = SUITE.subset(1).prompts[0]
    assert [r["seed"] for r in result["images"][:2]] == [first.seed + 7, first.seed + 8]
    assert result["realism"] is None and result["diversity"]["feature"] is None
    assert "no contrastive model" in format_table(result)


# ---------------------------------------------------------------------------------------------
# Reports and comparison


def test_report_round_trip(tmp_path, clip_dir):
    evaluation = evaluate(RenderingPipeline(size=32), SUITE.subset(1), n=2,
                          clip=ContrastiveModel.load(clip_dir), progress=False)
    written = write_report(evaluation, tmp_path / "r")
    assert load_result(written["json"]) == json.loads(json.dumps(evaluation.result))
    page = written["html"].read_text()
    for category in CATEGORIES:
        assert (tmp_path / "r" / "grids" / f"{category}.png").is_file()
        assert f"grids/{category}.png" in page
    grid = Image.open(tmp_path / "r" / "grids" / "single.png")
    assert grid.width == 2 * (64 + 2) + 2  # n columns, 32 px images shown at 64
    assert "a yellow circle" in page and "FID" in page


def test_charts_with_and_without_matplotlib(tmp_path, monkeypatch):
    result = evaluate(RenderingPipeline(size=32), SUITE.subset(1), n=1, progress=False).result
    pytest.importorskip("matplotlib")
    charts = write_charts(result, tmp_path / "charts")
    assert set(charts) == {"chart-judge"}  # no contrastive model: no alignment charts
    assert Image.open(charts["chart-judge"]).width > 100
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if not installed
    assert write_charts(result, tmp_path / "none") == {}


def test_compare_marks_better_and_worse():
    a = evaluate(RenderingPipeline(name="good"), SUITE.subset(1), n=1, progress=False).result
    b = evaluate(RenderingPipeline(name="bad", alter=recolour), SUITE.subset(1), n=1,
                 progress=False).result
    table = compare_table(a, b)
    line = next(row for row in table.splitlines() if row.startswith("judge overall"))
    assert "1.0000" in line and "0.0000" in line and line.endswith("-1.0000 -")
    assert "warning" not in table
    b["suite"]["sha256"] = "f" * 64
    assert "different suite files" in compare_table(a, b)


# ---------------------------------------------------------------------------------------------
# The command


def test_cli_evaluate_and_compare(tmp_path, tiny_model_dir, clip_dir, capsys):
    outs = []
    for seed in ("0", "1"):
        out = tmp_path / f"s{seed}"
        code = main(["evaluate", str(tiny_model_dir), "--n", "2", "--per-category", "1",
                     "--steps", "1", "--seed", seed, "--clip", str(clip_dir), "--out", str(out),
                     "-q"])
        assert code == 0, capsys.readouterr().err
        assert (out / "report.html").is_file()
        outs.append(out / "report.json")
    printed = capsys.readouterr().out
    assert "judge overall" in printed and "FID" in printed
    assert main(["evaluate", "--compare", str(outs[0]), str(outs[1])]) == 0
    compared = capsys.readouterr().out
    assert "b - a" in compared and "different seed" in compared


def test_cli_evaluates_a_contrastive_model(tmp_path, clip_dir, capsys):
    code = main(["evaluate", str(clip_dir), "--retrieval-n", "10", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "retrieval.json").read_text())
    assert set(report) >= {"seen", "heldout"}
    assert 0.0 <= report["heldout"]["id"]["r_precision"] <= 1.0


@pytest.mark.parametrize("argv,needle", [
    (["evaluate"], "give a model"),
    (["evaluate", "nowhere/model"], "no model"),
    (["evaluate", "--compare", "a.json", "b.json"], "does not exist"),
    (["evaluate", "MODEL", "--n", "0"], "--n"),
])
def test_cli_mistakes_are_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_cli_refuses_a_generator_as_clip(tiny_model_dir, capsys):
    assert main(["evaluate", str(tiny_model_dir), "--clip", str(tiny_model_dir), "-q"]) == 2
    assert "contrastive model is needed" in capsys.readouterr().err
