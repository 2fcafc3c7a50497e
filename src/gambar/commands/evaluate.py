"""`gambar evaluate`: score a model on a suite, or compare two report.json files.

    gambar evaluate MODEL --suite shapes-core [--n 4] [--seed S] [--clip CLIP] [--out DIR]
    gambar evaluate CONTRASTIVE_MODEL            # its own zero-shot retrieval report
    gambar evaluate --compare a.json b.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gambar.errors import InvalidInputError
from gambar.fsutil import check_writable
from gambar.model_dir import read_config
from gambar.pipeline import builtin_models, resolve_model

OUTPUT_DIR = Path("evaluations")
MAX_PER_PROMPT = 256  # 25,600 images of shapes-core's 100 prompts: hours on a CPU already
MAX_RETRIEVAL_N = 10_000  # scenes per split, each rendered and encoded
DEFAULT_CLIP = "contrastive"  # a built-in contrastive model, used when shipped


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-") or "model"


def _clip(name: str | None) -> Any:
    """The contrastive model to measure with: --clip, else the built-in one if shipped."""
    from gambar.contrastive.model import load_contrastive

    if name is not None:
        return load_contrastive(name)
    if DEFAULT_CLIP in builtin_models():
        return load_contrastive(DEFAULT_CLIP)
    return None


def run_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run what the arguments ask for; returns the report (or the two compared ones)."""
    from gambar.evaluation.report import compare_table, format_table, load_result

    if args.compare:
        if args.model is not None:
            raise InvalidInputError("give either a MODEL to evaluate or --compare A.json B.json")
        a, b = (load_result(p) for p in args.compare)
        print(compare_table(a, b))
        return {"a": a, "b": b}
    if args.model is None:
        raise InvalidInputError(
            "give a model to evaluate, e.g. gambar evaluate default --suite shapes-core, "
            "or --compare A.json B.json")
    _check_counts(args)
    path = resolve_model(args.model)
    if read_config(path)["family"] == "contrastive":
        return _contrastive(args, path)

    from gambar.commands.options import check_early, given_options
    from gambar.evaluation.harness import evaluate
    from gambar.evaluation.report import write_report
    from gambar.evaluation.suites import load_suite
    from gambar.pipeline import load

    suite = load_suite(args.suite)
    if args.per_category is not None:
        suite = suite.subset(args.per_category)
    clip = _clip(args.clip)
    options = given_options(args)
    check_early(path, options)
    pipe = load(path)
    seed = 0 if args.seed is None else args.seed
    evaluation = evaluate(pipe, suite, n=args.n, seed=seed, clip=clip, options=options,
                          batch_size=args.batch_size, progress=not args.quiet)
    out = Path(args.out) if args.out else (
        OUTPUT_DIR / f"{_slug(pipe.name)}-{suite.name}-n{args.n}-s{seed}")
    written = write_report(evaluation, out)
    print(format_table(evaluation.result))
    print(f"report: {written['html']}  figures: {written['json']}")
    return evaluation.result


def _check_counts(args: argparse.Namespace) -> None:
    """Counts and the report folder, before any model loads."""
    counts = [("--n", args.n, 1, MAX_PER_PROMPT), ("--retrieval-n", args.retrieval_n, 1,
                                                    MAX_RETRIEVAL_N)]
    if args.per_category is not None:
        counts.append(("--per-category", args.per_category, 1, None))
    for flag, value, low, high in counts:
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise InvalidInputError(f"{flag} must be {bound}, not {value}")
    if args.out is not None:
        check_writable(Path(args.out) / "report.json")


def _contrastive(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """A contrastive model's own report: R-precision and retrieval, seen vs held-out pairs."""
    from gambar.contrastive.model import ContrastiveModel
    from gambar.evaluation.clip_score import contrastive_report
    from gambar.fsutil import atomic_write_text

    model = ContrastiveModel.load(path)
    kwargs = {} if args.seed is None else {"seed": args.seed}
    report = contrastive_report(model, n=args.retrieval_n, **kwargs)
    out = Path(args.out) if args.out else OUTPUT_DIR / f"{_slug(model.name)}-retrieval"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "retrieval.json", json.dumps(report, indent=1) + "\n")
    print(f"{model.name} ({model.sha256[:12]}): zero-shot retrieval, "
          f"{report['n']} scenes per split")
    for split in ("seen", "heldout"):
        for lang, figures in report[split].items():
            cells = "  ".join(f"{k} {v:.3f}" for k, v in figures.items())
            print(f"  {split:8s} {lang}: {cells}")
    print(f"figures: {out / 'retrieval.json'}")
    return report
