"""The GANs against the diffusion default, side by side in one run (issue 14 item 5).

For each model: `gambar evaluate`'s figures on one suite (judged score overall, English,
Indonesian, single objects, held-out pairs; FID/KID in gambar's features; R-precision; pixel and
feature diversity across the seeds of one prompt), the training wall time its config records,
and speed: seconds per image at batch 1 (median of --reps single-image calls after a warm-up,
prompt encoding included) and images per second at batch 32. Mode collapse is the ratio of a
model's diversity to the diffusion model's in the same run (the bar: >= 0.5).

    python benchmarks/gan.py --models gan-int-cls xmc-gan gaugan2 default --n 4 --out gan.json

Prints (and with --out writes) one JSON object, then a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

import gambar
from gambar.contrastive.model import load_contrastive
from gambar.evaluation.harness import evaluate
from gambar.evaluation.suites import load_suite


def speed(pipe: Any, reps: int) -> dict[str, float]:
    """Seconds per image at batch 1 (median) and images per second at batch 32."""
    pipe.generate(["a red circle"], seeds=[0], progress=False)  # warm-up
    times = []
    for i in range(reps):
        start = time.perf_counter()
        pipe.generate(["a red circle above a blue square"], seeds=[i], progress=False)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    pipe.generate(["three blue stars"] * 32, seeds=list(range(32)), batch_size=32,
                  progress=False)
    return {"s_per_image_batch1": round(statistics.median(times), 4),
            "images_per_s_batch32": round(32 / (time.perf_counter() - start), 2)}


def row(pipe: Any, result: dict[str, Any]) -> dict[str, Any]:
    judge = result["judge"]
    languages = judge.get("languages", {})
    training = pipe.extra.get("training", {}) if hasattr(pipe, "extra") else {}
    return {
        "family": pipe.family, "sha256": pipe.sha256,
        "training_wall_time_s": training.get("wall_time_s"), "steps": training.get("steps"),
        "overall": judge["overall"],
        "english": languages.get("en", {}).get("overall"),
        "indonesian": languages.get("id", {}).get("overall"),
        "single": judge["categories"].get("single"),
        "heldout": judge["heldout"]["overall"],
        "fid": result["realism"]["fid"], "kid": result["realism"]["kid_mean"],
        "r_precision": result["alignment"]["r_precision"]["overall"],
        "diversity_pixel": result["diversity"]["pixel"]["mean"],
        "diversity_feature": result["diversity"]["feature"]["mean"],
        "sampler": result["sampler"],
    }


def table(rows: dict[str, dict[str, Any]]) -> str:
    cols = ["overall", "english", "indonesian", "single", "heldout", "fid", "r_precision",
            "collapse_ratio", "s_per_image_batch1", "training_wall_time_s"]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in rows.items():
        cells = [f"{r[c]:.3g}" if isinstance(r.get(c), float) else str(r.get(c)) for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+",
                        default=["gan-int-cls", "xmc-gan", "gaugan2", "default"])
    parser.add_argument("--reference", default="default",
                        help="the diffusion model whose diversity the collapse ratio divides by")
    parser.add_argument("--suite", default="shapes-core")
    parser.add_argument("--n", type=int, default=4, help="seeds per prompt")
    parser.add_argument("--reps", type=int, default=20, help="batch-1 calls timed per model")
    parser.add_argument("--clip", default="contrastive")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    torch.manual_seed(0)
    clip = load_contrastive(args.clip)
    suite = load_suite(args.suite)
    rows: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys([*args.models, args.reference]):
        pipe = gambar.load(name)
        evaluation = evaluate(pipe, suite, n=args.n, clip=clip, progress=False)
        rows[name] = {**row(pipe, evaluation.result), **speed(pipe, args.reps)}
    reference = rows[args.reference]["diversity_feature"]
    for r in rows.values():
        r["collapse_ratio"] = (round(r["diversity_feature"] / reference, 3)
                               if reference else None)
    result = {"suite": args.suite, "n": args.n, "threads": torch.get_num_threads(),
              "models": rows}
    text = json.dumps(result, indent=2)
    print(text)
    print(table(rows))
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
