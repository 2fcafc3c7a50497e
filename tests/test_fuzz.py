"""A fast, derandomized subset of benchmarks/fuzz.py: every target, a few seconds each.

A failure is any exception that is not a GambarError (argparse's exit 2 aside), an HTTP 5xx,
a multi-line error message, or a corrupt input accepted silently; the assertion lists each
failure's signature and shortest example. The benchmark runs >= 10,000 cases of the same targets.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from helpers_server import need

FUZZ = Path(__file__).parents[1] / "benchmarks" / "fuzz.py"
# Cases per target: each target runs in a few seconds on one core.
CASES = {"cli": 80, "recipe": 80, "model_dir": 200, "provenance": 300, "metadata": 300, "rest": 300}


@pytest.fixture(scope="module")
def fuzz():
    need("hypothesis")  # a test dependency: skipped without it locally, a failure in CI
    spec = importlib.util.spec_from_file_location("gambar_fuzz", FUZZ)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def env(fuzz, tmp_path_factory):
    return fuzz.make_env(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("target", sorted(CASES))
def test_fuzz_target_finds_nothing(fuzz, env, target, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recorder = fuzz.run_target(target, env, CASES[target], derandomize=True, timeout=30)
    summary = recorder.summary()
    assert summary["cases"] >= CASES[target] // 2, summary  # hypothesis ran the cases
    assert summary["failed"] == 0, json.dumps(summary["signatures"], indent=1)


def test_the_harness_catches_what_it_should(fuzz):
    """A traceback, a 5xx and a silent acceptance are failures; a GambarError is not."""
    from gambar.errors import InvalidInputError

    recorder = fuzz.Recorder(timeout=5)

    def raise_(exc):
        def case():
            raise exc
        return case

    recorder.run("user mistake", raise_(InvalidInputError("bad size")))
    recorder.run("argparse", raise_(SystemExit(2)))
    recorder.run("bug", raise_(KeyError("x")))
    recorder.run("bug again", raise_(KeyError("y")))
    recorder.run("server", raise_(fuzz.Http5xx("POST /api/jobs answered 500")))
    recorder.run("silent", raise_(fuzz.Silent("loaded a flipped byte")))
    summary = recorder.summary()
    assert summary["cases"] == 6
    assert (summary["traceback"], summary["http_5xx"], summary["silent"]) == (2, 1, 1)
    bug = next(s for s in summary["signatures"] if s["error"] == "KeyError")
    assert bug["count"] == 2 and bug["example"] == "'bug'"  # the shortest example is kept
