"""Issue 18's ablations at equal training time, side by side in one run.

Each arm trains from scratch for the same wall-time budget (`train.max_minutes`) on this machine,
then is judged on shapes-core (the layout stage on its own as well, for grounded arms):

    v1-recipe      configs/default.toml (stage 1 of v1: text-only diffusion, the v1 route)
    layout         configs/default-v2.toml: grounding channels + tokens, emoji and glyphs mixed in
    channels-only  the same, layout as painted channels only
    tokens-only    the same, layout as GLIGEN grounding tokens only
    shapes-only    the same as `layout` without emoji and glyphs in the mix

    python benchmarks/route_ablation.py --minutes 10 --n 1 --out route_ablation.json
    python benchmarks/route_ablation.py --arms layout tokens-only --minutes 3   # a subset

Runs go to runs/ablation-<arm> (resumable: an arm whose run already spent its budget is only
evaluated). Prints (and with --out writes) one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import tomllib
from pathlib import Path
from typing import Any

import torch

import gambar
from gambar.evaluation.harness import evaluate
from gambar.evaluation.suites import load_suite
from gambar.registry import task_factory
from gambar.train.loop import train


def _recipe(path: str) -> dict[str, Any]:
    return tomllib.loads(Path(path).read_text())


def arms() -> dict[str, dict[str, Any]]:
    v2 = _recipe("configs/default-v2.toml")
    channels, tokens, shapes = (copy.deepcopy(v2) for _ in range(3))
    channels["grounding"]["tokens"] = False
    tokens["grounding"]["channels"] = 0
    del shapes["data"]["mix"]
    return {"v1-recipe": _recipe("configs/default.toml"), "layout": v2,
            "channels-only": channels, "tokens-only": tokens, "shapes-only": shapes}


def run_arm(name: str, recipe: dict[str, Any], minutes: float, n: int) -> dict[str, Any]:
    recipe = copy.deepcopy(recipe)
    train_cfg = recipe["train"]
    # The budget, not the step count, ends every arm: steps far beyond it, LR held after warm-up.
    train_cfg.update(steps=100_000, decay_steps=0, max_minutes=minutes, sample_every=0,
                     checkpoint_every=200, run_dir=f"runs/ablation-{name}")
    recipe["name"] = f"ablation-{name}"
    resume = (Path(train_cfg["run_dir"]) / "checkpoint").exists()
    model_dir = train(task_factory(recipe["family"]), recipe, resume=resume, progress=False)
    log = [json.loads(line) for line in (Path(train_cfg["run_dir"]) / "log.jsonl").open()]
    pipe = gambar.load(model_dir)
    ev = evaluate(pipe, load_suite("shapes-core"), n=n, progress=False).result
    return {"steps": log[-1]["step"], "wall_time_s": log[-1]["time"], "judge": ev["judge"],
            "layout_stage": ev["layout"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per arm")
    parser.add_argument("--n", type=int, default=1, help="images per suite prompt")
    parser.add_argument("--arms", nargs="*", default=None, help="a subset of the arms")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    chosen = arms()
    if args.arms:
        unknown = set(args.arms) - set(chosen)
        if unknown:
            parser.error(f"unknown arms {sorted(unknown)}; known: {', '.join(chosen)}")
        chosen = {k: v for k, v in chosen.items() if k in args.arms}
    result: dict[str, Any] = {"minutes": args.minutes, "n_per_prompt": args.n,
                              "torch_threads": torch.get_num_threads(), "arms": {}}
    for name, recipe in chosen.items():
        result["arms"][name] = run_arm(name, recipe, args.minutes, args.n)
        print(json.dumps({name: result["arms"][name]["judge"]["overall"]}), flush=True)
        if args.out:  # each arm as it finishes: a stopped run keeps what it measured
            args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
