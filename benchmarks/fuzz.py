"""Fuzz every input gambar reads; a case fails on a traceback, an HTTP 5xx or silent corruption.

Targets (hypothesis strategies, seeded and bounded; every case runs in this process):
- cli:        argv for `gambar.cli.main`, up to the point of model work: models load for real,
              the network is replaced by a zero denoiser and samplers run at most 2 steps, and
              train/serve/data build/ab stop where they would start working;
- recipe:     TOML text and --set overrides -> `gambar train`'s parsing, `load_recipe`, the
              [train] config and the family's task (model built, tokenizer on 16 captions);
- model_dir:  a tiny saved model with mutated config.json values or flipped/cut bytes ->
              `gambar.load` and, when it loads, 2 real sampler steps;
- provenance: gambar PNGs with mutated text chunks, JSON and headers -> `gambar info` and
              `gambar generate --replay`;
- metadata:   metadata.jsonl / .csv contents -> the imagefolder loader, every item read;
- rest:       bodies, path parameters and headers for every endpoint of `create_app` (gambar,
              OpenAI, A1111) through FastAPI's TestClient, workers drawing with the zero denoiser.

A case passes when it returns or raises a GambarError (argparse's SystemExit(2) included). It
fails on any other exception (a traceback), an HTTP status >= 500 or a worker's logged traceback
(http_5xx), an error message of more than one line (message), a case over --timeout seconds,
or a corrupt input accepted without a word (silent: a flipped byte in model.safetensors that
loads, a dataset record outside the dataset's folder). Prints one JSON object: cases, failures
and seconds per target, and each distinct failure signature (kind, exception type, innermost
frame) with the shortest example seen.

    python benchmarks/fuzz.py                          # 11,000 cases, seed 0
    python benchmarks/fuzz.py --cases 600 --targets cli rest --seed 3

tests/test_fuzz.py runs a small derandomized subset of the same targets.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import importlib
import io
import json
import os
import resource
import shutil
import signal
import string
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from gambar.errors import GambarError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' tiny model and crafted-PNG helpers
from helpers_png import deep_json, png_of_size, text_chunk, with_text  # noqa: E402

# Cases per target in a full run (11,000 in all); --cases scales them.
SHARES = {"cli": 2500, "recipe": 1500, "model_dir": 1500, "provenance": 2000, "metadata": 1500,
          "rest": 2000}
EXAMPLE_CHARS = 600  # an example longer than this is shown cut
CLEAN_EVERY = 200  # cases between wiping what the cli target wrote

# ---- outcomes --------------------------------------------------------------------------------


class ReachedModelWork(Exception):  # noqa: N818 — a sentinel, not an error
    """Raised by the stubs where a command would start training, serving or rendering."""


class Silent(Exception):  # noqa: N818
    """A corrupt or unsafe input was accepted without an error or a warning."""


class Slow(Exception):  # noqa: N818
    """A case ran past the per-case timeout."""


class Multiline(Exception):  # noqa: N818
    """A one-line `error:` message spread over several lines."""


class Http5xx(Exception):
    """The server answered a status >= 500 (or a worker logged a traceback)."""


KINDS = {Silent: "silent", Slow: "slow", Multiline: "message", Http5xx: "http_5xx"}
COUNTS = ("traceback", "http_5xx", "silent", "message", "slow", "crash")


@dataclass
class Recorder:
    """Counts a target's cases and its failures; `log` (JSON lines) keeps both on disk as they
    happen, so that a supervisor can tell what a case that killed the process was."""

    timeout: float = 60.0
    skip: int = 0  # cases already run by an earlier process: generated again, not run
    log: io.TextIOBase | None = None
    cases: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)

    def run(self, example: Any, case: Callable[[], None]) -> None:
        index, self.cases = self.cases, self.cases + 1
        if index < self.skip:
            return
        self._log({"case": index, "example": _shown(example)})
        try:
            with _deadline(self.timeout), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                case()
        except (GambarError, ReachedModelWork):
            pass
        except SystemExit as exc:
            if exc.code not in (0, 2, None):
                self.record(exc, example)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 — every other exception is a finding
            self.record(exc, example)

    def record(self, exc: BaseException, example: Any) -> None:
        kind = KINDS.get(type(exc), "traceback")
        if exc.__cause__ is not None:  # a 500 from a handler's exception: show that exception
            exc = exc.__cause__
        frames = traceback.extract_tb(exc.__traceback__)
        # The innermost frame, and the innermost one in gambar (where a fix would go).
        ours = [f for f in frames if "/gambar/" in f.filename] or frames[-1:]
        where = " <- ".join(dict.fromkeys(_frame(f) for f in (frames[-1], ours[-1])))
        message = str(exc).splitlines()[0][:200] if str(exc) else ""
        exception = kind in ("traceback", "http_5xx") and frames and not isinstance(exc, Http5xx)
        failure = failure_record(kind, type(exc).__name__, where if exception else "",
                                 _frame(ours[-1]) if exception else "", message,
                                 _shown(example))
        self.failures.append(failure)
        self._log(failure)

    def _log(self, entry: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.write(json.dumps(entry) + "\n")
            self.log.flush()

    def summary(self) -> dict[str, Any]:
        return summarise(self.cases, self.failures)


def failure_record(kind: str, error: str, where: str, fix_at: str, message: str,
                   example: str) -> dict[str, Any]:
    """One failure; `key` groups failures of one cause (the frame a fix would go in, or the
    message for findings that are not exceptions)."""
    if kind == "crash":  # named by how the process died (its last stderr line varies)
        fix_at = error
    elif not where:  # not an exception (a 5xx status, a silent acceptance): named by message
        error, fix_at = kind, message[:60]
    return {"kind": kind, "key": f"{kind}|{error}|{fix_at}", "error": error, "where": where,
            "message": message, "example": example}


def summarise(cases: int, failures: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts by kind, and one entry per signature with its count and shortest example."""
    counts = dict.fromkeys(COUNTS, 0)
    signatures: dict[str, dict[str, Any]] = {}
    for f in failures:
        counts[f["kind"]] += 1
        sig = signatures.setdefault(f["key"], {**f, "count": 0})
        sig["count"] += 1
        if len(f["example"]) < len(sig["example"]):
            sig["example"] = f["example"]
    ordered = sorted(signatures.values(), key=lambda s: -s["count"])
    return {"cases": cases, "failed": sum(counts.values()), **counts,
            "signatures": [{k: v for k, v in s.items() if k != "key"} for s in ordered]}


def _frame(frame: traceback.FrameSummary) -> str:
    return f"{_short(frame.filename)}:{frame.lineno} in {frame.name}"


def _short(filename: str) -> str:
    for marker in ("/site-packages/", "/src/", "/lib/python"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _shown(example: Any) -> str:
    text = repr(example)
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + f"... ({len(text)})"


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise Slow in the main thread after `seconds` (SIGALRM; no-op elsewhere)."""
    if seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise Slow(f"a case ran over {seconds:g} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---- shared fixtures -------------------------------------------------------------------------


@dataclass
class Env:
    """Files every target may use, made once per run under `root`."""

    root: Path
    tiny: Path  # a saved tiny diffusion model (32 px, small text encoder)
    png: bytes  # a PNG that tiny drew, with its provenance
    provenance: dict[str, Any]


def make_env(root: Path) -> Env:
    """A tiny model (the tests' recipe, built in code) and one image it drew."""
    import torch

    from gambar.provenance import png_bytes
    from helpers_models import make_tiny_pipeline

    tiny = root / "tiny"
    make_tiny_pipeline().save(tiny)
    import gambar

    with torch.inference_mode():
        (gen,) = gambar.load(tiny).generate(["a red circle"], seeds=[7], steps=2, progress=False)
    return Env(root, tiny, png_bytes(gen.image, gen.provenance), gen.provenance)


@contextlib.contextmanager
def fast_models() -> Iterator[None]:
    """Models load for real but sample fast: a zero denoiser, at most 2 sampler steps.

    Every argument still reaches the real validation (the pipeline's checks, the sampler's own
    options); load() is memoised so each model loads once."""
    import torch

    import gambar.pipeline
    from gambar.generators.diffusion import pipeline as diffusion
    from gambar.text import frozen

    real_get = diffusion.get_sampler

    def get_sampler(name: str) -> Callable[..., torch.Tensor]:
        sample = real_get(name)

        def fast(denoise: Any, x: torch.Tensor, cond: Any, schedule: Any,
                 timesteps: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            return sample(denoise, x, cond, schedule, timesteps[-2:], **kwargs)  # 2 steps

        return fast

    def zero_denoiser(*args: Any, **kwargs: Any) -> Callable[..., torch.Tensor]:
        return lambda x, t, cond: torch.zeros_like(x)

    real_load = gambar.pipeline.load

    @functools.cache
    def load(name_or_path: str | Path = "default") -> Any:
        return real_load(name_or_path)

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(diffusion, "get_sampler", get_sampler))
        stack.enter_context(mock.patch.object(diffusion, "as_denoiser", zero_denoiser))
        stack.enter_context(mock.patch.object(frozen, "load_frozen_minilm",
                                              functools.cache(frozen.load_frozen_minilm)))
        for module in ("gambar.pipeline", "gambar.commands.generate", "gambar.commands.sheet",
                       "gambar.commands.serve", "gambar"):
            mod = __import__(module, fromlist=["load"])
            if hasattr(mod, "load"):
                stack.enter_context(mock.patch.object(mod, "load", load))
        yield


# ---- strategies shared by several targets ----------------------------------------------------

PROMPTS = ("a red circle", "tiga bintang biru", "a green square to the left of a purple heart",
           "a grinning face")
# Characters that look like nothing, break encoders or are not text at all.
ODD_CHARS = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\x07", "\x1b", "\n",
             "\t", "\r", " ", "\u3000", "\u202e", "\udcff", "\ud800", "\udfff", "\x7f", "\u0301",
             "😀", "İ", "ß", "\U0010ffff", "\ufffd")
odd_text = st.text(st.one_of(st.characters(), st.sampled_from(ODD_CHARS),
                             st.characters(categories=["Cs"])), max_size=30)
texts = st.one_of(st.sampled_from(PROMPTS), odd_text,
                  st.builds(lambda a, b: a + b, st.sampled_from(PROMPTS), odd_text),
                  st.integers(1, 5).map(lambda k: "x" * (250 * k)))
edge_ints = st.one_of(st.integers(-3, 70), st.sampled_from(
    [0, -1, 63, 64, 65, 255, 256, 1000, 1001, 2**31, 2**32, 2**63 - 1, 2**63, 10**30, -10**30]))
edge_floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from([0.0, -0.0, 1.0, 2.5, 50.0, 50.5, -1.0, 1e308]))
json_scalars = st.one_of(st.none(), st.booleans(), edge_ints, edge_floats, texts)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def _patch(stack: contextlib.ExitStack, dotted: str, new: Any) -> None:
    """Replace module.attribute for the stack's lifetime (importing the module first)."""
    module, attr = dotted.rsplit(".", 1)
    stack.enter_context(mock.patch.object(importlib.import_module(module), attr, new))


def _reset(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# ---- (a) cli ---------------------------------------------------------------------------------


def _int_tokens() -> st.SearchStrategy[str]:
    return st.one_of(edge_ints.map(str), st.sampled_from(["", "x", "1.5", "1e3", " 3", "٣",
                                                          "0x10", "-0"]))


def _float_tokens() -> st.SearchStrategy[str]:
    return st.one_of(edge_floats.map(repr), st.sampled_from(["nan", "inf", "-inf", "1e309", "x",
                                                             ""]))


def cli_argv(env: Env, files: dict[str, str]) -> st.SearchStrategy[list[str]]:
    """argv lists: mostly well-formed commands with odd values, some random tokens."""
    paths = st.sampled_from(list(files.values()) + ["x.png", "out/deep/x.png", "x.jpg", "",
                                                    ".png", "X.PNG", "/", "\udcff.png"])
    models = st.sampled_from([str(env.tiny), str(env.tiny), "default", "contrastive", "nope", "",
                              files["dir"], files["file"]])
    prompt = texts.filter(lambda s: "\x00" not in s)  # argv can never hold a NUL

    def opts(table: dict[str, st.SearchStrategy[str] | None]) -> st.SearchStrategy[list[str]]:
        def one(name: str) -> st.SearchStrategy[list[str]]:
            value = table[name]
            return st.just([name]) if value is None else value.map(lambda v: [name, v])

        return st.lists(st.sampled_from(sorted(table)).flatmap(one), max_size=6).map(
            lambda parts: [t for p in parts for t in p])

    ints, floats = _int_tokens(), _float_tokens()
    inputs = st.sampled_from(list(files.values()))  # images, layouts, and neither
    sampling = {"--steps": ints, "--guidance": floats,
                "--sampler": st.sampled_from(["dpmpp", "ddim", "ddpm", "euler", "x"])}
    generate = {**sampling, "-n": ints, "--seed": ints, "--negative": prompt, "--size": ints,
                "--precision": st.sampled_from(["fp32", "bf16", "fp16"]), "--model": models,
                "-o": paths, "--grid": None, "--overwrite": None, "--batch-size": ints,
                "--replay": st.sampled_from(list(files.values())), "-q": None,
                "--eta": floats, "--strength": floats, "--init": inputs, "--mask": inputs,
                "--layout": inputs, "--image": inputs}
    sheet = {**sampling, "--seeds": ints, "--model": models, "-o": paths, "--scale": ints,
             "--overwrite": None, "--prompts-file": st.sampled_from(list(files.values()))}
    evaluate = {**sampling, "--n": ints, "--seed": ints, "--size": ints, "--per-category": ints,
                "--suite": st.sampled_from(["shapes-core", "nope", files["latin1"]]),
                "--clip": models, "--retrieval-n": ints, "--batch-size": ints,
                "--compare": st.sampled_from(list(files.values()))}
    serve = {"--model": models, "--port": ints, "--host": st.sampled_from(
        ["127.0.0.1", "999.1.1.1", "::1", "", "localhost"]), "--token": prompt,
             "--queue-size": ints, "--per-client": ints, "--workers": ints, "--threads": ints,
             "--keep-hours": floats, "--max-results-mb": floats, "--results": paths}
    data = {"--size": ints, "--limit": ints, "--split": st.sampled_from(["train", "val", "x"]),
            "--grid": paths, "--no-verify": None}
    commands = [
        st.tuples(st.just(["generate", "-q"]), st.lists(prompt, max_size=1), opts(generate)),
        st.tuples(st.just(["info"]), st.sampled_from(list(files.values())).map(lambda p: [p]),
                  st.just([])),
        st.tuples(st.just(["sheet", "-q"]), st.lists(prompt, max_size=2), opts(sheet)),
        st.tuples(st.just(["evaluate", "-q"]), st.lists(models, max_size=1), opts(evaluate)),
        st.tuples(st.just(["train", "-q"]), st.sampled_from(list(files.values())).map(
            lambda p: [p]), opts({"--set": st.sampled_from(
                ["train.steps=0", "train.lr=1e30", "x", "=", "train.nope=1", "unet.heads=[]"]),
                "--resume": None})),
        st.tuples(st.just(["data"]), st.sampled_from([["build", "emoji"], ["build", "glyphs"],
                                                      ["info"]]),
                  st.tuples(paths, opts(data)).map(lambda t: [t[0], *t[1]])),
        st.tuples(st.just(["serve"]), st.just([]), opts(serve)),
        st.tuples(st.just(["ab"]), st.sampled_from([["prepare", str(env.tiny), "default"],
                                                    ["ranking"], ["serve"]]),
                  opts({"--db": paths, "--seeds": ints, "--per-category": ints,
                        "--prompts-file": st.sampled_from(list(files.values()))})),
    ]
    well_formed = st.one_of(*commands).map(lambda t: [*t[0], *t[1], *t[2]])
    weighted = st.one_of(well_formed, well_formed, well_formed, well_formed,
                         st.lists(st.one_of(prompt, st.sampled_from(
                             ["generate", "-n", "--seed", "--", "-", "--help", "info"])),
                             max_size=5))
    return weighted


def _cli_files(work: Path, env: Env) -> dict[str, str]:
    """Files the argv may name: odd outputs, crafted PNGs and prompt files."""
    (work / "dir.png").mkdir()
    (work / "file.png").write_bytes(b"not a png")
    (work / "image.png").write_bytes(env.png)
    (work / "latin1.txt").write_bytes("a red circle\ncaf\xe9 merah\n".encode("latin-1"))
    (work / "deep.png").write_bytes(with_text(env.png, deep_json(100_000, "list")))
    (work / "list.png").write_bytes(with_text(env.png, "[1, 2]"))
    (work / "bomb.png").write_bytes(png_of_size(50_000, 50_000, []))
    (work / "recipe.toml").write_text((REPO / "configs" / "tiny.toml").read_text())
    (work / "layout.json").write_text('[{"box": [0.1, 0.1, 0.5, 0.5], "phrase": "x"}]')
    (work / "boxes.json").write_text('[{"box": [0.5, 0.1, 0.1, 2], "phrase": 3}]')
    return {"dir": "dir.png", "file": "file.png/x.png", "proc": "/proc/x.png",
            "image": "image.png", "latin1": "latin1.txt", "deep": "deep.png", "list": "list.png",
            "bomb": "bomb.png", "recipe": "recipe.toml", "missing": "missing.png",
            "layout": "layout.json", "boxes": "boxes.json"}


@contextlib.contextmanager
def cli_target(env: Env) -> Iterator[tuple[st.SearchStrategy[Any], Callable[[Any], None]]]:
    import torch

    from gambar.cli import main

    threads = torch.get_num_threads()
    work = _reset(env.root / "cli")
    files = _cli_files(work, env)
    counter = iter(range(10**9))

    def stop(*args: Any, **kwargs: Any) -> None:
        raise ReachedModelWork

    def stop_evaluate(pipe: Any, suite: Any, *, n: int, seed: int, options: Any,
                      batch_size: int, **kwargs: Any) -> None:
        prompt = suite.prompts[0]
        chosen = {k: v for k, v in (options or {}).items() if v is not None}
        pipe.generate([prompt.prompt], seeds=suite.seeds(prompt, 1, seed)[:1],
                      batch_size=batch_size, progress=False, **chosen)
        raise ReachedModelWork

    def case(argv: list[str]) -> None:
        if next(counter) % CLEAN_EVERY == CLEAN_EVERY - 1:
            for p in work.iterdir():
                if p.name not in {Path(f).parts[0] for f in files.values()}:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv)
        finally:
            torch.set_num_threads(threads)  # `serve --threads N` sets the process's pool
        _check_one_line(code, err.getvalue())

    with contextlib.chdir(work), fast_models(), contextlib.ExitStack() as stack:
        for target in ("gambar.train.loop.train", "uvicorn.run",
                       "gambar.data.emoji.build_emoji", "gambar.data.glyphs.build_glyphs",
                       "gambar.evaluation.ab_pairs.prepare_pairs",
                       "gambar.evaluation.clip_score.contrastive_report"):
            _patch(stack, target, stop)
        _patch(stack, "gambar.evaluation.harness.evaluate", stop_evaluate)
        yield cli_argv(env, files), case


def _check_one_line(code: int, err: str) -> None:
    if code == 2:
        tail = err[err.rfind("error: "):].strip() if "error: " in err else err.strip()
        if not tail.startswith("error: ") or "\n" in tail:
            raise Multiline(f"exit 2 without a one-line error: {tail[:120]!r}")


# ---- (b) recipe ------------------------------------------------------------------------------

TOML_VALUES = ("0", "-1", "1", "2.0", "1e30", "1e-30", "inf", "-inf", "nan", "true", '"x"', '"64"',
               "[]", "[1, 2]", "[[1]]", '["en"]', "{}", "{a = 1}", "10000000000000000000000",
               "0x10", '""', "1979-05-27", "07:32:00", '"unet-tiny"', '"small"', '"minilm"',
               '"contrastive"', '"diffusion"', '"shapes"', "[1, 2, 4, 8, 16, 32]", "100000")


def _recipe_texts() -> list[str]:
    return [p.read_text() for p in sorted((REPO / "configs").rglob("*.toml"))]


def _recipe_keys() -> list[str]:
    import tomllib

    keys = {"trian", "modle", "nope", "family", "name"}
    for text in _recipe_texts():
        for section, body in tomllib.loads(text).items():
            keys.add(section)
            if isinstance(body, dict):
                keys.update(body)
    return sorted(keys)


def recipe_cases() -> st.SearchStrategy[tuple[bytes, list[str]]]:
    bases, keys = _recipe_texts(), _recipe_keys()
    value = st.one_of(st.sampled_from(TOML_VALUES), edge_ints.map(str))
    key = st.sampled_from(keys)

    def mutate(base: str, edits: list[tuple[int, int, str, str, str]]) -> bytes:
        lines = base.splitlines()
        for op, where, k, v, extra in edits:
            at = where % (len(lines) + 1)
            if op == 0 and lines:  # a new value for an existing key
                i = at % len(lines)
                if "=" in lines[i]:
                    lines[i] = lines[i].split("=", 1)[0] + "= " + v
            elif op == 1:
                lines.insert(at, f"{k} = {v}")
            elif op == 2:
                lines.insert(at, f"[{k}]")
            elif op == 3 and lines:
                del lines[at % len(lines)]
            elif op == 4:
                lines.insert(at, extra)
        return "\n".join(lines).encode("utf-8", "surrogatepass")

    edit = st.tuples(st.integers(0, 4), st.integers(0, 60), key, value, odd_text)
    text = st.one_of(
        st.builds(mutate, st.sampled_from(bases), st.lists(edit, min_size=1, max_size=4)),
        st.builds(lambda d, k: f"family = \"diffusion\"\nx = {deep_json(d, k)}\n".replace(
            ":", "=").encode(), st.sampled_from([10, 1000, 100_000]), st.sampled_from(["list"])),
        st.binary(max_size=200),
        st.sampled_from(bases).map(lambda t: t.encode("utf-16")),
    )
    override = st.one_of(st.builds(lambda s, k, v: f"{s}.{k}={v}", st.sampled_from(
        ["train", "unet", "diffusion", "model", "data", "text", "nope"]), key, value),
        st.sampled_from(["x", "=", "train.=1", ".steps=1", "train.steps", "a.b.c.d=1"]),
        odd_text)
    return st.tuples(text, st.lists(override, max_size=3))


@contextlib.contextmanager
def recipe_target(env: Env) -> Iterator[tuple[st.SearchStrategy[Any], Callable[[Any], None]]]:
    from gambar.cli import main
    from gambar.contrastive import task as contrastive_task
    from gambar.generators.diffusion import training as diffusion_task
    from gambar.text import frozen
    from gambar.train.recipe import train_config

    work = _reset(env.root / "recipe")
    path = work / "recipe.toml"

    def build(factory: Callable[[dict[str, Any]], Any], recipe: dict[str, Any],
              **kwargs: Any) -> None:
        train_config(recipe)
        factory(recipe)  # the task: data stream, text encoder, model; no step is taken
        raise ReachedModelWork

    def case(example: tuple[bytes, list[str]]) -> None:
        text, overrides = example
        path.write_bytes(text)
        argv = ["train", str(path), "-q"] + [a for o in overrides for a in ("--set", o)]
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main(argv)
        _check_one_line(code, err.getvalue())

    with contextlib.chdir(work), contextlib.ExitStack() as stack:
        _patch(stack, "gambar.train.loop.train", build)
        for module in (diffusion_task, contrastive_task):
            stack.enter_context(mock.patch.object(module, "TOKENIZER_CAPTIONS", 16))
        stack.enter_context(mock.patch.object(frozen, "load_frozen_minilm",
                                              functools.cache(frozen.load_frozen_minilm)))
        yield recipe_cases(), case


# ---- (c) model_dir ---------------------------------------------------------------------------


def _paths_in(d: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(d, dict):
        for k, v in d.items():
            out += _paths_in(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out += _paths_in(v, (*prefix, i))
    return out


def _set_path(d: Any, path: tuple[Any, ...], value: Any, delete: bool) -> None:
    for k in path[:-1]:
        d = d[k]
    if delete:
        del d[path[-1]]
    else:
        d[path[-1]] = value


# Values a config.json field may hold that stay cheap to build (no 10^4-channel networks).
CONFIG_VALUES = st.one_of(st.sampled_from(
    [None, True, False, 0, -1, 1, 2, 3, 7, 64, 10**6, 10**12, 2**63, -10**6, 0.5, -0.0, 1e300,
     float("nan"), float("inf"), "", "64", "x", "unet-tiny", "small", "minilm", "cosine",
     "linear", "v", "eps", "x0", "diffusion", "contrastive", [], [1], [1, 2], [0, 1, 2], {},
     {"a": 1}]), texts)


def model_cases(env: Env) -> st.SearchStrategy[tuple[str, Any]]:
    config = json.loads((env.tiny / "config.json").read_text())
    paths = _paths_in(config)
    files = sorted(p.name for p in env.tiny.iterdir())
    value_edit = st.tuples(st.sampled_from(paths), CONFIG_VALUES, st.booleans())
    byte_edit = st.tuples(st.sampled_from(files), st.integers(0, 2**40), st.integers(1, 255))
    return st.one_of(
        st.tuples(st.just("config"), st.lists(value_edit, min_size=1, max_size=3)),
        st.tuples(st.just("config-text"), st.one_of(json_values.map(json.dumps), st.binary(
            max_size=64).map(lambda b: b.decode("latin-1")), st.just(deep_json(100_000, "list")))),
        st.tuples(st.just("flip"), st.lists(byte_edit, min_size=1, max_size=3)),
        st.tuples(st.just("cut"), st.tuples(st.sampled_from(files), st.integers(0, 2**40))),
        st.tuples(st.just("remove"), st.sampled_from(files)),
        st.tuples(st.just("tokenizer"), st.tuples(st.sampled_from(_paths_in(json.loads(
            (env.tiny / "tokenizer.json").read_text()))[:40]), CONFIG_VALUES)),
    )


@contextlib.contextmanager
def model_target(env: Env) -> Iterator[tuple[st.SearchStrategy[Any], Callable[[Any], None]]]:
    import torch

    import gambar

    work = _reset(env.root / "model_dir")
    config = json.loads((env.tiny / "config.json").read_text())
    tokenizer = json.loads((env.tiny / "tokenizer.json").read_text())

    def case(example: tuple[str, Any]) -> None:
        kind, edit = example
        target = work / "m"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(env.tiny, target)
        weights_changed = False
        if kind == "config":
            cfg = json.loads(json.dumps(config))
            for path, value, delete in edit:
                with contextlib.suppress(KeyError, IndexError, TypeError):
                    _set_path(cfg, path, value, delete)
            (target / "config.json").write_text(json.dumps(cfg))
        elif kind == "config-text":
            (target / "config.json").write_text(edit, errors="surrogatepass")
        elif kind == "flip":
            for name, offset, xor in edit:
                data = bytearray((target / name).read_bytes())
                if data:
                    data[offset % len(data)] ^= xor
                    (target / name).write_bytes(bytes(data))
            weights = "model.safetensors"  # two flips of one byte may cancel: compare
            weights_changed = (target / weights).read_bytes() != (env.tiny / weights).read_bytes()
        elif kind == "cut":
            name, offset = edit
            data = (target / name).read_bytes()
            (target / name).write_bytes(data[: offset % max(len(data), 1)])
        elif kind == "remove":
            (target / edit).unlink()
        else:
            tok = json.loads(json.dumps(tokenizer))
            with contextlib.suppress(KeyError, IndexError, TypeError):
                _set_path(tok, edit[0], edit[1], False)
            (target / "tokenizer.json").write_text(json.dumps(tok))
        pipe = gambar.load(target)
        if weights_changed:
            raise Silent("a model.safetensors with a flipped byte loaded without an error")
        if hasattr(pipe, "generate"):
            with torch.inference_mode():
                pipe.generate(["a red circle"], seeds=[0], steps=2, progress=False)

    yield model_cases(env), case


# ---- (d) provenance --------------------------------------------------------------------------


def provenance_cases(env: Env) -> st.SearchStrategy[tuple[str, Any]]:
    prov, fields = env.provenance, sorted(env.provenance)
    field_edit = st.tuples(st.sampled_from([*fields, "grid_of", "sheet_of", "sampler_options"]),
                           json_values, st.booleans())
    return st.one_of(
        st.tuples(st.just("fields"), st.lists(field_edit, min_size=1, max_size=4)),
        st.tuples(st.just("json"), json_values),
        st.tuples(st.just("deep"), st.tuples(st.sampled_from([50, 999, 1000, 100_000]),
                                             st.sampled_from(["list", "dict"]))),
        st.tuples(st.just("text"), st.tuples(st.one_of(odd_text, st.integers(0, 3).map(
            lambda k: json.dumps(prov)[: -1 - k]), st.sampled_from(
            [" " * (2**20 + 1), json.dumps({**prov, "pad": "x" * 2**20})])),
            st.sampled_from([b"tEXt", b"zTXt", b"iTXt"]), st.booleans())),
        st.tuples(st.just("header"), st.tuples(
            st.sampled_from([0, 1, 50_000, 2**31 - 1, 2**32 - 1]),
            st.sampled_from([0, 1, 50_000, 2**31 - 1]))),
        st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 2**20), st.integers(1, 255)),
                                            min_size=1, max_size=4)),
        st.tuples(st.just("cut"), st.integers(0, len(env.png))),
        st.tuples(st.just("length"), st.sampled_from([2**31 - 1, 2**32 - 1, 10**6, 0])),
        st.tuples(st.just("bytes"), st.binary(max_size=100)),
    )


def provenance_file(env: Env, kind: str, edit: Any) -> bytes:
    """The crafted PNG bytes of one provenance case."""
    png = env.png
    if kind == "fields":
        prov = dict(env.provenance)
        for name, value, delete in edit:
            if delete:
                prov.pop(name, None)
            else:
                prov[name] = value
        return with_text(png, json.dumps(prov))
    if kind == "json":
        return with_text(png, json.dumps(edit))
    if kind == "deep":
        return with_text(png, deep_json(*edit))
    if kind == "text":
        text, chunk, after = edit
        return with_text(png, text, kind=chunk, after_idat=after)
    if kind == "header":
        return png_of_size(edit[0], edit[1], [text_chunk(json.dumps(env.provenance))])
    if kind == "flip":
        data = bytearray(png)
        for offset, xor in edit:
            data[offset % len(data)] ^= xor
        return bytes(data)
    if kind == "cut":
        return png[:edit]
    if kind == "length":  # the gambar chunk claims another length
        at = png.find(b"tEXtgambar") - 4
        return png[:at] + struct.pack(">I", edit) + png[at + 4:]
    return edit


@contextlib.contextmanager
def provenance_target(env: Env) -> Iterator[tuple[st.SearchStrategy[Any], Callable[[Any], None]]]:
    from gambar.cli import main

    work = _reset(env.root / "provenance")
    path = work / "case.png"

    def case(example: tuple[str, Any]) -> None:
        path.write_bytes(provenance_file(env, *example))
        for argv in (["info", str(path)],
                     ["generate", "--replay", str(path), "--model", str(env.tiny), "-q",
                      "-o", str(work / "replayed.png"), "--overwrite"]):
            err = io.StringIO()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                code = main(argv)
            _check_one_line(code, err.getvalue())

    with fast_models():
        yield provenance_cases(env), case


# ---- (e) metadata ----------------------------------------------------------------------------


def metadata_cases() -> st.SearchStrategy[tuple[str, list[Any], list[bytes]]]:
    """(metadata file name, rows, raw lines mixed in): images named by the rows are created."""
    names = st.one_of(st.sampled_from(["a.png", "sub/c.png", "../outside.png", "/tmp/outside.png",
                                       "sub/../../outside.png", "sub/../a.png", "missing.png", "",
                                       ".", "sub", "broken.png", "a.txt"]), texts)
    caption = st.one_of(texts, st.lists(texts, max_size=3), json_values)
    row = st.one_of(
        st.fixed_dictionaries({"file_name": names, "text": caption}),
        st.fixed_dictionaries({"file_name": names, "captions": caption}),
        st.dictionaries(st.sampled_from(["file_name", "text", "captions", "x"]), json_values,
                        max_size=3),
        json_values)
    raw = st.one_of(st.binary(max_size=30), st.just("caf\xe9".encode("latin-1")),
                    st.just(b"\xef\xbb\xbf{}"), st.just(deep_json(100_000, "list").encode()))
    return st.tuples(st.sampled_from(["metadata.jsonl", "metadata.csv"]),
                     st.lists(row, max_size=5), st.lists(raw, max_size=1))


def _metadata_bytes(name: str, rows: list[Any], raw: list[bytes]) -> bytes:
    if name == "metadata.csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["file_name", "text"])
        for row in rows:
            if isinstance(row, dict):
                writer.writerow([row.get("file_name", ""), row.get("text", "")])
        return buf.getvalue().encode("utf-8", "surrogatepass") + b"".join(raw)
    lines = [json.dumps(row).encode() for row in rows] + raw
    return b"\n".join(lines)


@contextlib.contextmanager
def metadata_target(env: Env) -> Iterator[tuple[st.SearchStrategy[Any], Callable[[Any], None]]]:
    from PIL import Image

    from gambar.data.loading import load_dataset

    work = _reset(env.root / "metadata")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    image = buf.getvalue()
    (work / "outside.png").write_bytes(image)
    if not Path("/tmp/outside.png").exists():
        Path("/tmp/outside.png").write_bytes(image)
    root = work / "data"

    def case(example: tuple[str, list[Any], list[bytes]]) -> None:
        name, rows, raw = example
        _reset(root)
        for row in rows:  # every image a row names exists, so loading goes past the listing
            file = row.get("file_name") if isinstance(row, dict) else None
            if isinstance(file, str) and file.endswith(".png") and ".." not in file \
                    and not file.startswith("/"):
                with contextlib.suppress(OSError, ValueError, UnicodeEncodeError):
                    (root / file).parent.mkdir(parents=True, exist_ok=True)
                    (root / file).write_bytes(b"\x89PNG broken" if "broken" in file else image)
        (root / name).write_bytes(_metadata_bytes(name, rows, raw))
        dataset = load_dataset(root, size=16)
        for i in range(len(dataset)):
            dataset[i]
        inside = root.resolve()
        for record in dataset.records:
            if isinstance(record.image, Path) and not record.image.resolve().is_relative_to(
                    inside):
                raise Silent("a record outside the dataset's folder was loaded")

    yield metadata_cases(), case


# ---- (f) rest --------------------------------------------------------------------------------

JOB_ID = "0" * 32
ENDPOINTS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "/api/jobs": ("POST", {"prompt": "a red circle", "n": 1, "seed": 1, "steps": 2}),
    "/v1/images/generations": ("POST", {"prompt": "a red circle", "n": 1, "size": "32x32"}),
    "/sdapi/v1/txt2img": ("POST", {"prompt": "a red circle", "steps": 2, "width": 32,
                                   "height": 32, "seed": 3}),
    "/sdapi/v1/interrupt": ("POST", {}),
    "/api/health": ("GET", None), "/api/models": ("GET", None), "/api/jobs?": ("GET", None),
    "/v1/models": ("GET", None), "/sdapi/v1/sd-models": ("GET", None),
    "/sdapi/v1/samplers": ("GET", None), "/sdapi/v1/schedulers": ("GET", None),
    "/sdapi/v1/options": ("GET", None), "/sdapi/v1/scripts": ("GET", None),
    "/sdapi/v1/progress": ("GET", None), "/": ("GET", None), "/docs": ("GET", None),
    "/api/jobs/{id}": ("GET", None), "/api/jobs/{id}/cancel": ("POST", None),
    "/api/jobs/{id}/delete": ("DELETE", None), "/api/jobs/{id}/images/{index}.png": ("GET", None),
}
OVERRIDES = st.dictionaries(st.sampled_from(["sd_model_checkpoint", "CLIP_stop_at_last_layers",
                                             "x"]), json_values, max_size=2)
# Values a client may send where a number, a size or a name is expected.
FIELD_VALUES = st.one_of(json_values, OVERRIDES, st.text(alphabet="0123456789x²³٣X× auto-.",
                                                         max_size=10),
                         st.sampled_from(["²x²", "٣x٣", "3x3x3", "0x0", "-8x-8", " 32x32",
                                          "32X32", "1e3x1e3", "99999999999999999999x1"]))

# One-field probes: each is a wrong type, an edge value or a format a parser may trip on.
PROBES: tuple[Any, ...] = (
    None, True, 0, -1, 1, 2**63, 1e308, float("nan"), "", "x", "²x²", "32x32", "٣", "a" * 2000,
    [], [1], {}, {"sd_model_checkpoint": 5}, {"sd_model_checkpoint": ["x"]},
    {"CLIP_stop_at_last_layers": "2"})
DIGITS = st.text(alphabet="0123456789²³¹٣۳", min_size=1, max_size=4)
# Fields with a format of their own get values of that format too (a "WxH" size, a dict).
FIELD_KINDS = {
    "size": st.one_of(FIELD_VALUES, st.builds(lambda a, b: f"{a}x{b}", DIGITS, DIGITS)),
    "override_settings": st.one_of(OVERRIDES, FIELD_VALUES),
}


def body_fields(pipelines: dict[str, Any]) -> dict[str, list[str]]:
    """Each POST endpoint's fields, read from its request model (built from the served models'
    options), the served models' option and input names (extensions of the compatible APIs),
    and a few fields no endpoint has."""
    from gambar.server import compat_a1111, compat_openai, schemas

    models = {"/api/jobs": schemas.job_request_model(pipelines), "/v1/images/generations":
              compat_openai.ImageGenerationRequest, "/sdapi/v1/txt2img":
              compat_a1111.Txt2ImgRequest}
    served = sorted({name for pipe in pipelines.values() for name in
                     (*pipe.Options.names(), *pipe.inputs)})
    out = {path: sorted({*model.model_fields, *served}) + ["x", "size", "seed"]
           for path, model in models.items()}
    out["/sdapi/v1/interrupt"] = ["x"]
    return out


def rest_cases(pipelines: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    fields = body_fields(pipelines)

    def edits(endpoint: str) -> st.SearchStrategy[list[tuple[str, Any, bool]]]:
        names = list(fields.get(endpoint, ["x"]))
        names += 4 * [n for n in names if n in FIELD_KINDS]  # the hand-parsed formats, often
        edit = st.sampled_from(names).flatmap(
            lambda name: st.tuples(st.just(name), FIELD_KINDS.get(name, FIELD_VALUES),
                                   st.booleans()))
        # mostly one or two edits: a single odd field gets past the others' checks
        return st.one_of(st.lists(edit, min_size=1, max_size=1),
                         st.lists(edit, min_size=1, max_size=1), st.lists(edit, max_size=6))

    raw = st.one_of(json_values.map(json.dumps), st.just(deep_json(100_000, "list")),
                    st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
    # the endpoints with bodies four times as often as the others
    endpoint = st.sampled_from(sorted(ENDPOINTS) + 3 * sorted(fields))
    # Half the cases change one field of a valid body to one probe value (a schema sweep).
    sweep = st.sampled_from([(e, f, p) for e in sorted(fields) for f in fields[e]
                             for p in range(len(PROBES))]).map(lambda t: {
                                 "endpoint": t[0], "edits": [(t[1], PROBES[t[2]], False)],
                                 "raw": None, "id": "real", "index": "0", "headers": {}})
    return st.one_of(sweep, endpoint.flatmap(lambda e: st.fixed_dictionaries({
        "endpoint": st.just(e),
        "edits": edits(e),
        "raw": st.integers(0, 9).flatmap(lambda k: st.none() if k else raw),  # 1 in 10
        "id": st.one_of(st.just("real"), st.sampled_from([JOB_ID, "x", "%00", "..", "A" * 32]),
                        st.text(alphabet=string.hexdigits, max_size=40)),
        "index": st.one_of(edge_ints.map(str), st.sampled_from(["x", "-0", "1e3"])),
        "headers": st.dictionaries(st.sampled_from(["X-Client-Id", "Authorization",
                                                    "Content-Type"]),
                                   st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                           max_size=20), max_size=2),
    })))


@contextlib.contextmanager
def rest_target(env: Env) -> Iterator[tuple[st.SearchStrategy[Any], Callable[[Any], None]]]:
    import logging

    from fastapi.testclient import TestClient

    import gambar
    from gambar.server.app import create_app
    from gambar.server.service import JobService
    from gambar.server.settings import ServerSettings

    logged: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info:
                logged.append(record)

    handler = Catch(level=logging.ERROR)
    work = _reset(env.root / "rest")
    with fast_models():
        pipe = gambar.load(env.tiny)
        service = JobService({pipe.name: pipe}, ServerSettings(results_dir=work / "results",
                                                               queue_size=1000, per_client=1000))
        logging.getLogger("gambar").addHandler(handler)
        try:
            with TestClient(create_app(service)) as client:
                first = client.post("/api/jobs", json={"prompt": "a red circle", "steps": 2})
                real_id = first.json()["id"]

                def case(example: dict[str, Any]) -> None:
                    logged.clear()
                    endpoint = example["endpoint"]
                    method, body = ENDPOINTS[endpoint]
                    job = real_id if example["id"] == "real" else example["id"]
                    url = (endpoint.replace("/delete", "").replace("{id}", job)
                           .replace("{index}", example["index"]))
                    kwargs: dict[str, Any] = {"headers": example["headers"]}
                    if body is not None:
                        body = dict(body)
                        for name, value, delete in example["edits"]:
                            if delete:
                                body.pop(name, None)
                            else:
                                body[name] = value
                        if example["raw"] is not None:
                            kwargs["content"] = example["raw"].encode("utf-8", "surrogatepass")
                        else:
                            kwargs["content"] = json.dumps(body).encode("utf-8", "surrogatepass")
                            kwargs["headers"] = {"Content-Type": "application/json",
                                                 **example["headers"]}
                    try:
                        response = client.request(method, url, **kwargs)
                    except Exception as exc:  # raised by a handler: the client would see a 500
                        raise Http5xx(f"{method} {endpoint} raised {exc!r}") from exc
                    if response.status_code >= 500:
                        raise Http5xx(f"{method} {endpoint.split('?')[0]} answered "
                                      f"{response.status_code}: {response.text[:100]}")
                    if logged:
                        record = logged[0]
                        raise Http5xx(f"a worker logged a traceback: "
                                      f"{record.exc_info[0].__name__}: {record.exc_info[1]}")

                yield rest_cases(service.pipelines), case
        finally:
            logging.getLogger("gambar").removeHandler(handler)


# ---- running ---------------------------------------------------------------------------------

TARGETS: dict[str, Callable[[Env], contextlib.AbstractContextManager[Any]]] = {
    "cli": cli_target, "recipe": recipe_target, "model_dir": model_target,
    "provenance": provenance_target, "metadata": metadata_target, "rest": rest_target,
}


def run_target(name: str, env: Env, cases: int, *, seed: int | None = 0,
               derandomize: bool = False, timeout: float = 60.0, skip: int = 0,
               log: io.TextIOBase | None = None) -> Recorder:
    """Run `cases` generated cases of one target in this process (the first `skip` are
    generated but not run); the recorder holds counts and failures."""
    recorder = Recorder(timeout=timeout, skip=skip, log=log)
    with TARGETS[name](env) as (strategy, case):
        @settings(max_examples=cases, database=None, deadline=None, derandomize=derandomize,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(strategy)
        def fuzz(example: Any) -> None:
            recorder.run(example, lambda: case(example))

        if seed is not None and not derandomize:
            fuzz = hypothesis_seed(seed)(fuzz)
        fuzz()
    return recorder


def supervise(name: str, cases: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run one target in child processes; when a case kills its process (the OOM killer, an
    abort in C code), record it as a crash and go on from the next case in a new process."""
    log, skip, failures = work / f"{name}.jsonl", 0, []
    while True:
        log.unlink(missing_ok=True)
        child = [sys.executable, __file__, "--child", name, "--cases", str(cases), "--skip",
                 str(skip), "--seed", str(args.seed), "--timeout", str(args.timeout),
                 "--max-memory-gb", str(args.max_memory_gb), "--log", str(log),
                 "--env", str(work / "env")]
        done = subprocess.run(child, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, errors="replace")
        entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() \
            else []
        last = max((e["case"] for e in entries if "case" in e), default=skip - 1)
        failures += [e for e in entries if "kind" in e]
        if done.returncode == 0:
            return summarise(last + 1, failures)
        example = next((e["example"] for e in reversed(entries) if "case" in e), "?")
        reason = (signal.Signals(-done.returncode).name if done.returncode < 0
                  else f"exit {done.returncode}")
        tail = (done.stderr.strip().splitlines() or [""])[-1][:200]
        failures.append(failure_record("crash", reason, "", "", f"{reason}: {tail}", example))
        if last < skip:  # died before its first case (the target's setup): no use retrying
            return summarise(skip, failures)
        skip = last + 1
        if skip >= cases:
            return summarise(skip, failures)


def main(argv: list[str] | None = None) -> int:
    """Run the targets; exit status 1 if any case failed, so a CI step can use it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=sum(SHARES.values()),
                        help="cases in all, split over the targets (default 11000)")
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    parser.add_argument("--max-memory-gb", type=float, default=6.0,
                        help="data-segment limit of each child, so that an unbounded allocation "
                        "is a MemoryError finding, not the machine's OOM killer (default 6)")
    parser.add_argument("--child", choices=list(TARGETS), help=argparse.SUPPRESS)
    parser.add_argument("--skip", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--env", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0

    total = sum(SHARES[t] for t in args.targets)
    started = time.monotonic()
    report: dict[str, Any] = {"seed": args.seed, "cases_requested": args.cases, "targets": {}}
    with tempfile.TemporaryDirectory(prefix="gambar-fuzz-") as tmp:
        for name in args.targets:
            t0 = time.monotonic()
            n = max(1, round(args.cases * SHARES[name] / total))
            summary = supervise(name, n, args, Path(tmp))
            summary["seconds"] = round(time.monotonic() - t0, 1)
            report["targets"][name] = summary
            print(f"{name}: {summary['cases']} cases, {summary['failed']} failed, "
                  f"{summary['seconds']} s", file=sys.stderr)
    per = list(report["targets"].values())
    report["total"] = {k: sum(t[k] for t in per) for k in ("cases", "failed", *COUNTS)}
    report["total"]["signatures"] = sum(len(t["signatures"]) for t in per)
    report["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(report, indent=1, ensure_ascii=True))
    return 1 if report["total"]["failed"] else 0


def _child(args: argparse.Namespace) -> None:
    """One target's cases in this process, failures logged to args.log as they happen."""
    if args.max_memory_gb > 0:
        limit = int(args.max_memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    import torch

    torch.set_num_threads(1)
    args.env.mkdir(parents=True, exist_ok=True)
    env = make_env(Path(tempfile.mkdtemp(dir=args.env)))
    with args.log.open("a") as log:
        run_target(args.child, env, args.cases, seed=args.seed, timeout=args.timeout,
                   skip=args.skip, log=log)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
