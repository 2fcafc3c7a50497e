"""Evaluation suites: versioned prompt files shipped with the package (`suites/*.json`).

A suite fixes what every model is scored on: prompts in English and Indonesian, a fixed number of
scenes per category, the seed of each scene (both languages of a scene share it, so a language gap
is the text encoder's, not the noise's), and held-out (colour, shape) combinations, marked and
reported beside the overall, never in it (shapes-spec.md, "Judging an image" step 7). A suite file
never changes once shipped: a new version is a new file, and reports record the file's sha256.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from gambar.data.shapes import PlacementError, describe, render_scene, sample_scene
from gambar.data.shapes_vocab import CATEGORIES, ObjectSpec, Relation, SceneSpec
from gambar.errors import CorruptFileError, InvalidInputError
from gambar.evaluation.compositional import is_held_out

SUITE_FORMAT = "gambar-suite/1"
# name -> file of its current version; old versions stay loadable by file name
SUITES: dict[str, str] = {"shapes-core": "shapes-core-v1.json",
                          "shapes-paraphrase": "shapes-paraphrase-v1.json"}
MAX_PER_PROMPT = 100  # images per prompt; seeds of one scene are seed .. seed + 99
SEED_STRIDE = 1000  # scene k's seed is k * SEED_STRIDE: no two scenes share an image seed
SCENE_TRIES = 10_000


@dataclass(frozen=True)
class SuitePrompt:
    """One prompt of a suite: its words, its scene (the judge's ground truth) and its seed."""

    id: str  # "<scene_id>-<language>"
    scene_id: str  # the same scene in another language has the same scene_id and seed
    category: str
    language: str
    held_out: bool
    prompt: str
    seed: int
    scene: SceneSpec


@dataclass(frozen=True)
class Suite:
    """A loaded suite and the sha256 of the file it came from."""

    name: str
    version: int
    description: str
    prompts: tuple[SuitePrompt, ...]
    sha256: str
    source: str  # file name (package suites) or path

    def seeds(self, prompt: SuitePrompt, n: int, offset: int = 0) -> list[int]:
        """Seeds of the n images of `prompt`; `offset` (the CLI's --seed) shifts all of them."""
        if not 1 <= n <= MAX_PER_PROMPT:
            raise InvalidInputError(f"images per prompt must be 1..{MAX_PER_PROMPT}, not {n}")
        if offset < 0:
            raise InvalidInputError(f"the seed offset must be >= 0, not {offset}")
        return [offset + prompt.seed + j for j in range(n)]

    def subset(self, per_category: int) -> Suite:
        """The first `per_category` scenes of each category (held-out ones counted apart), for
        quick runs and tests; keeps both languages of each scene."""
        kept: dict[tuple[str, bool], list[str]] = {}
        for p in self.prompts:
            ids = kept.setdefault((p.category, p.held_out), [])
            if p.scene_id not in ids and len(ids) < per_category:
                ids.append(p.scene_id)
        chosen = {sid for ids in kept.values() for sid in ids}
        prompts = tuple(p for p in self.prompts if p.scene_id in chosen)
        return Suite(self.name, self.version, self.description, prompts, self.sha256,
                     f"{self.source} (first {per_category} scenes per category)")

    def summary(self) -> dict[str, Any]:
        """What a report records about the suite."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256,
                "source": self.source, "prompts": len(self.prompts),
                "scenes": len({p.scene_id for p in self.prompts})}


# ---------------------------------------------------------------------------------------------
# Scenes <-> JSON


def scene_to_json(scene: SceneSpec) -> dict[str, Any]:
    """A SceneSpec as plain JSON: objects [[colour, shape, size|null]], relation or null."""
    rel = scene.relation
    return {
        "category": scene.category,
        "objects": [[o.color, o.shape, o.size] for o in scene.objects],
        "relation": None if rel is None else [rel.subject, rel.relation, rel.other],
    }


def scene_from_json(d: dict[str, Any]) -> SceneSpec:
    """Inverse of `scene_to_json`."""
    objects = tuple(ObjectSpec(c, s, z) for c, s, z in d["objects"])
    rel = d["relation"]
    relation = None if rel is None else Relation(int(rel[0]), str(rel[1]), int(rel[2]))
    return SceneSpec(objects, relation, d["category"])


# ---------------------------------------------------------------------------------------------
# Loading


def suite_path(name_or_path: str | Path) -> Path:
    """A suite name ("shapes-core"), a shipped file name, or a path -> the file."""
    root = Path(str(resources.files("gambar.evaluation") / "suites"))
    name = str(name_or_path)
    if name in SUITES:
        return root / SUITES[name]
    if (root / name).is_file():
        return root / name
    path = Path(name_or_path)
    if path.is_file():
        return path
    known = ", ".join(sorted(SUITES))
    raise InvalidInputError(f"no suite named or at {name!r}; shipped suites: {known}")


def load_suite(name_or_path: str | Path = "shapes-core") -> Suite:
    """Load and check a suite file; the result carries the file's sha256."""
    path = suite_path(name_or_path)
    raw = path.read_bytes()
    try:
        d = json.loads(raw)
        if d.get("format") != SUITE_FORMAT:
            raise ValueError(f"format is not {SUITE_FORMAT}")
        prompts = tuple(
            SuitePrompt(id=p["id"], scene_id=p["scene_id"], category=p["category"],
                        language=p["language"], held_out=bool(p["held_out"]),
                        prompt=p["prompt"], seed=int(p["seed"]), scene=scene_from_json(p["scene"]))
            for p in d["prompts"]
        )
        suite = Suite(d["name"], int(d["version"]), d.get("description", ""), prompts,
                      hashlib.sha256(raw).hexdigest(),
                      path.name if path.parent.name == "suites" else str(path))
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptFileError(f"{path} is not a gambar suite: {exc}") from None
    check_suite(suite)
    return suite


def check_suite(suite: Suite) -> None:
    """Refuse a suite whose prompts contradict their metadata (CorruptFileError)."""
    ids = [p.id for p in suite.prompts]
    if len(set(ids)) != len(ids) or not ids:
        raise CorruptFileError(f"suite {suite.name}: prompt ids must be unique and non-empty")
    seeds: dict[str, int] = {}
    for p in suite.prompts:
        if p.category not in CATEGORIES or p.category != p.scene.category:
            raise CorruptFileError(f"suite {suite.name}: {p.id} has category {p.category!r}")
        if p.held_out != is_held_out(p.scene):
            raise CorruptFileError(f"suite {suite.name}: {p.id} is mismarked as held_out")
        if seeds.setdefault(p.scene_id, p.seed) != p.seed:
            raise CorruptFileError(f"suite {suite.name}: scene {p.scene_id} has two seeds")
    starts = sorted(seeds.values())
    if any(b - a < MAX_PER_PROMPT for a, b in zip(starts, starts[1:], strict=False)):
        raise CorruptFileError(
            f"suite {suite.name}: scene seeds must be at least {MAX_PER_PROMPT} apart")


# ---------------------------------------------------------------------------------------------
# Building (how shapes-core-v1.json was made; a shipped file is never rebuilt in place)


def _renders(scene: SceneSpec, sizes: Sequence[int] = (32, 64)) -> bool:
    """Whether the scene places at every size a model might be evaluated at."""
    try:
        for size in sizes:
            render_scene(scene, np.random.default_rng(0), size)
    except PlacementError:
        return False
    return True


def build_shapes_core(per_category: int = 8, held_out_per_category: int = 2,
                      seed: int = 20260501, version: int = 1) -> dict[str, Any]:
    """The shapes-core suite as JSON: distinct scenes per category, pure categories (no sizes
    mixed into counts or relations), canonical wording in both languages."""
    from gambar.contrastive.task import scene_key  # one definition of "the same labels"

    rng = np.random.default_rng(seed)
    scenes: list[tuple[str, bool, SceneSpec]] = []
    seen: set[str] = set()
    for held_out, count in ((False, per_category), (True, held_out_per_category)):
        for category in CATEGORIES:
            found = 0
            for _ in range(SCENE_TRIES):
                if found == count:
                    break
                scene = sample_scene(rng, allow_held_out=held_out, categories=[category],
                                     combine=0.0)
                key = scene_key(scene)
                if is_held_out(scene) != held_out or key in seen or not _renders(scene):
                    continue
                seen.add(key)
                scenes.append((category, held_out, scene))
                found += 1
            else:
                raise RuntimeError(f"could not find {count} {category} scenes")  # a bug
    prompts = []
    for k, (category, held_out, scene) in enumerate(scenes):
        scene_id = f"{'heldout-' if held_out else ''}{category}-{k:03d}"
        for language in ("en", "id"):
            prompts.append({
                "id": f"{scene_id}-{language}", "scene_id": scene_id, "category": category,
                "language": language, "held_out": held_out,
                "prompt": describe(scene, language), "seed": k * SEED_STRIDE,
                "scene": scene_to_json(scene),
            })
    return {
        "format": SUITE_FORMAT,
        "name": "shapes-core",
        "version": version,
        "description": (
            f"{per_category} scenes per category ({', '.join(CATEGORIES)}) plus "
            f"{held_out_per_category} held-out-combination scenes per category, each in English "
            "and Indonesian with canonical wording; both languages of a scene share its seed."
        ),
        "generator": (f"gambar.evaluation.suites.build_shapes_core(per_category={per_category}, "
                      f"held_out_per_category={held_out_per_category}, seed={seed})"),
        "prompts": prompts,
    }


# ---------------------------------------------------------------------------------------------
# Paraphrases: the scenes of each category in wording the data never uses


def _o(color: str, shape: str, size: str | None = None) -> ObjectSpec:
    return ObjectSpec(color, shape, size)


# Written by hand, not by the caption generator: synonyms ("big", "tiny", "beneath", "on top of"),
# other constructions ("a star that is green", "a pair of", digits, "berwarna", "yang besar",
# "terletak di bawah", "sepasang"), and free word order. (scene, English, Indonesian) per row.
PARAPHRASES: tuple[tuple[SceneSpec, str, str], ...] = (
    (SceneSpec((_o("green", "star"),), None, "single"),
     "a star that is green", "bintang yang berwarna hijau"),
    (SceneSpec((_o("red", "heart"),), None, "single"),
     "one heart, coloured red", "satu hati berwarna merah"),
    (SceneSpec((_o("blue", "diamond"),), None, "single"),
     "a blue diamond shape", "bentuk belah ketupat biru"),
    (SceneSpec((_o("yellow", "triangle"),), None, "single"),
     "draw a yellow triangle", "gambarlah segitiga kuning"),
    (SceneSpec((_o("purple", "square"),), None, "single"),
     "a square in purple", "persegi warna ungu"),
    (SceneSpec((_o("orange", "circle"),) * 2, None, "count"),
     "a pair of orange circles", "sepasang lingkaran oranye"),
    (SceneSpec((_o("blue", "star"),) * 3, None, "count"),
     "3 blue stars", "3 bintang biru"),
    (SceneSpec((_o("pink", "heart"),) * 4, None, "count"),
     "four hearts, all pink", "empat buah hati merah muda"),
    (SceneSpec((_o("black", "square"),) * 2, None, "count"),
     "two squares that are black", "dua persegi yang berwarna hitam"),
    (SceneSpec((_o("green", "triangle"),) * 3, None, "count"),
     "a trio of green triangles", "tiga buah segitiga hijau"),
    (SceneSpec((_o("red", "circle"), _o("blue", "square")), None, "two_objects"),
     "a red circle together with a blue square", "lingkaran merah bersama persegi biru"),
    (SceneSpec((_o("yellow", "star"), _o("purple", "heart")), None, "two_objects"),
     "a yellow star plus a purple heart", "bintang kuning serta hati ungu"),
    (SceneSpec((_o("green", "diamond"), _o("orange", "triangle")), None, "two_objects"),
     "one green diamond as well as one orange triangle",
     "satu belah ketupat hijau beserta satu segitiga oranye"),
    (SceneSpec((_o("pink", "circle"), _o("black", "star")), None, "two_objects"),
     "a black star with a pink circle", "bintang hitam bersama lingkaran merah muda"),
    (SceneSpec((_o("blue", "triangle"), _o("red", "heart")), None, "two_objects"),
     "both a blue triangle and a red heart", "baik segitiga biru maupun hati merah"),
    (SceneSpec((_o("red", "circle"), _o("blue", "square")), Relation(0, "above", 1), "position"),
     "a red circle on top of a blue square", "lingkaran merah berada di atas persegi biru"),
    (SceneSpec((_o("green", "heart"), _o("yellow", "star")), Relation(0, "below", 1),
               "position"),
     "a green heart beneath a yellow star", "hati hijau terletak di bawah bintang kuning"),
    (SceneSpec((_o("purple", "triangle"), _o("orange", "diamond")), Relation(0, "left of", 1),
               "position"),
     "a purple triangle on the left side of an orange diamond",
     "segitiga ungu di sisi kiri belah ketupat oranye"),
    (SceneSpec((_o("blue", "square"), _o("pink", "square")), Relation(0, "right of", 1),
               "position"),
     "a blue square on the right-hand side of a pink square",
     "persegi biru di sisi kanan persegi merah muda"),
    (SceneSpec((_o("black", "heart"), _o("red", "star")), Relation(0, "below", 1), "position"),
     "a black heart under a red star", "hati hitam letaknya di bawah bintang merah"),
    (SceneSpec((_o("red", "circle", "large"),), None, "size"),
     "a big red circle", "lingkaran merah yang besar"),
    (SceneSpec((_o("blue", "star", "small"),), None, "size"),
     "a tiny blue star", "bintang biru mungil"),
    (SceneSpec((_o("green", "heart", "large"),), None, "size"),
     "a huge green heart", "hati hijau berukuran besar"),
    (SceneSpec((_o("yellow", "heart", "small"),), None, "size"),
     "a little yellow heart", "hati kuning yang kecil"),
    (SceneSpec((_o("purple", "triangle", "large"),), None, "size"),
     "a purple triangle, drawn big", "segitiga ungu ukuran besar"),
)


def build_shapes_paraphrase(version: int = 1) -> dict[str, Any]:
    """The shapes-paraphrase suite as JSON: `PARAPHRASES`' scenes, English and Indonesian, each
    pair sharing a seed (scenes with a held-out pair are marked, as in shapes-core)."""
    prompts = []
    for k, (scene, english, indonesian) in enumerate(PARAPHRASES):
        if not _renders(scene):
            raise RuntimeError(f"paraphrase scene {k} does not place")  # a bug in the table
        held_out = is_held_out(scene)
        scene_id = f"{'heldout-' if held_out else ''}{scene.category}-{k:03d}"
        for language, text in (("en", english), ("id", indonesian)):
            prompts.append({
                "id": f"{scene_id}-{language}", "scene_id": scene_id, "category": scene.category,
                "language": language, "held_out": held_out, "prompt": text,
                "seed": k * SEED_STRIDE, "scene": scene_to_json(scene),
            })
    return {
        "format": SUITE_FORMAT,
        "name": "shapes-paraphrase",
        "version": version,
        "description": (
            f"{len(PARAPHRASES)} shapes scenes (5 per category) in wording the training data "
            "never uses (synonyms, other constructions, digits), written by hand in English and "
            "Indonesian; both languages of a scene share its seed."),
        "generator": "gambar.evaluation.suites.build_shapes_paraphrase()",
        "prompts": prompts,
    }
