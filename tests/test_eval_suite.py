"""The shipped shapes-core suite: what it promises (both languages, counts, seeds, held-out)."""

import hashlib
import json
from collections import Counter

import pytest

from gambar.contrastive.task import scene_key
from gambar.data.prompts import detect_language, parse_prompt
from gambar.data.shapes_vocab import CATEGORIES
from gambar.errors import CorruptFileError, InvalidInputError
from gambar.evaluation.compositional import is_held_out
from gambar.evaluation.harness import reference_image
from gambar.evaluation.suites import (
    MAX_PER_PROMPT,
    build_shapes_core,
    load_suite,
    scene_from_json,
    scene_to_json,
    suite_path,
)

SUITE = load_suite("shapes-core")


def test_counts_per_category_and_language():
    core = Counter((p.category, p.language) for p in SUITE.prompts if not p.held_out)
    held = Counter((p.category, p.language) for p in SUITE.prompts if p.held_out)
    for category in CATEGORIES:
        for language in ("en", "id"):
            assert core[(category, language)] == 8
            assert held[(category, language)] == 2
    assert SUITE.name == "shapes-core" and SUITE.version == 1


def test_every_prompt_says_its_scene_in_its_language():
    for p in SUITE.prompts:
        assert detect_language(p.prompt) == p.language, p.prompt
        assert scene_key(parse_prompt(p.prompt)) == scene_key(p.scene), p.prompt


def test_languages_of_a_scene_share_scene_and_seed():
    by_scene = {}
    for p in SUITE.prompts:
        by_scene.setdefault(p.scene_id, []).append(p)
    for prompts in by_scene.values():
        assert sorted(p.language for p in prompts) == ["en", "id"]
        assert len({p.seed for p in prompts}) == 1 and len({p.scene for p in prompts}) == 1


def test_scenes_are_distinct_and_held_out_marked():
    scenes = {p.scene_id: p.scene for p in SUITE.prompts}
    assert len({scene_key(s) for s in scenes.values()}) == len(scenes) == 50
    for p in SUITE.prompts:
        assert p.held_out == is_held_out(p.scene)
        assert p.category == p.scene.category
        if p.category in ("count", "two_objects", "position"):
            assert all(o.size is None for o in p.scene.objects)  # pure categories


def test_seeds_are_disjoint_and_shiftable():
    prompt = SUITE.prompts[2]
    assert SUITE.seeds(prompt, 3) == [prompt.seed, prompt.seed + 1, prompt.seed + 2]
    assert SUITE.seeds(prompt, 2, offset=5) == [prompt.seed + 5, prompt.seed + 6]
    all_seeds = [s for p in SUITE.prompts if p.language == "en"
                 for s in SUITE.seeds(p, MAX_PER_PROMPT)]
    assert len(all_seeds) == len(set(all_seeds))
    with pytest.raises(InvalidInputError):
        SUITE.seeds(prompt, MAX_PER_PROMPT + 1)


def test_every_scene_renders_at_32_and_64():
    for p in SUITE.prompts[::2]:
        for size in (32, 64):
            assert reference_image(p.scene, p.seed, size).size == (size, size)


def test_sha256_is_the_files():
    path = suite_path("shapes-core")
    assert SUITE.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert SUITE.summary()["prompts"] == 100 and SUITE.summary()["scenes"] == 50


def test_subset_keeps_both_languages():
    small = SUITE.subset(1)
    assert len(small.prompts) == 2 * 2 * len(CATEGORIES)  # 1 core + 1 held-out, 2 languages
    assert small.sha256 == SUITE.sha256


def test_scene_json_round_trip():
    for p in SUITE.prompts:
        assert scene_from_json(json.loads(json.dumps(scene_to_json(p.scene)))) == p.scene


def test_loading_by_path_and_refusing_bad_files(tmp_path):
    d = json.loads(suite_path("shapes-core").read_text())
    good = tmp_path / "mine.json"
    good.write_text(json.dumps(d))
    assert len(load_suite(good).prompts) == 100
    d["prompts"][0]["held_out"] = True
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    with pytest.raises(CorruptFileError, match="held_out"):
        load_suite(bad)
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(CorruptFileError):
        load_suite(tmp_path / "junk.json")
    with pytest.raises(InvalidInputError, match="shapes-core"):
        load_suite("no-such-suite")


def test_builder_is_deterministic_and_valid(tmp_path):
    small = build_shapes_core(per_category=2, held_out_per_category=1, seed=3)
    assert small == build_shapes_core(per_category=2, held_out_per_category=1, seed=3)
    path = tmp_path / "small.json"
    path.write_text(json.dumps(small))
    assert len(load_suite(path).prompts) == 2 * 3 * len(CATEGORIES)


def test_the_paraphrase_suite_is_its_builder_output_in_wording_the_data_never_uses():
    """shapes-paraphrase (issue 18): the shipped file is what its builder writes, five scenes
    per category in both languages, and no prompt is a caption the data generator can write."""
    import numpy as np

    from gambar.data.shapes import describe
    from gambar.evaluation.suites import build_shapes_paraphrase, load_suite, suite_path

    built = build_shapes_paraphrase()
    assert json.loads(suite_path("shapes-paraphrase").read_text()) == built
    suite = load_suite("shapes-paraphrase")
    assert Counter(p.category for p in suite.prompts) == {c: 10 for c in CATEGORIES}
    for p in suite.prompts:
        captions = {describe(p.scene, p.language)}
        captions |= {describe(p.scene, p.language, np.random.default_rng(k)) for k in range(300)}
        assert p.prompt not in captions, p.prompt
        assert is_held_out(p.scene) == p.held_out
