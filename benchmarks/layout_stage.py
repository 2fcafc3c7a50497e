"""The layout stage on its own: does the layout it samples satisfy the prompt?

Each sampled layout is drawn with exact shapes (gambar.evaluation.layout_check) and judged by the
shapes judge against the suite's scene, on shapes-core and on shapes-paraphrase (wording the data
never uses). A layout that passes is one an ideal image stage would draw right, so this separates
the layout stage's misses from the image stage's.

    python benchmarks/layout_stage.py --model runs/default-v2/model --n 4
    python benchmarks/layout_stage.py --ablation --budget 300 --out layout_ablation.json

--ablation trains the layout stage alone, once per variant, for the same wall time on the data
of configs/default-v2.toml, and judges each (VARIANTS: box edges vs offsets from the previous
centre; reading the frozen MiniLM states, word-piece embeddings learned from the captions, or
both; the sentence mean at every step or not).
Prints (and with --out writes) one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
import tomllib
from pathlib import Path
from typing import Any

import torch

from gambar.evaluation.compositional import judge, score
from gambar.evaluation.layout_check import render_layout
from gambar.evaluation.suites import load_suite

SUITES = ("shapes-core", "shapes-paraphrase")
# name -> [planner] settings; each trained for --budget seconds (issue 18's ablation of the
# layout stage, the frozen MiniLM vs a learned bilingual token embedding among them)
VARIANTS: dict[str, dict[str, Any]] = {
    "edges/minilm": {"boxes": "edges", "reads": "minilm", "coord_features": 8},
    "relative/minilm": {"boxes": "relative", "reads": "minilm", "coord_features": 8},
    "relative/minilm/sentence": {"boxes": "relative", "reads": "minilm", "coord_features": 8,
                                 "sentence": True},
    "relative/tokens/sentence": {"boxes": "relative", "reads": "tokens", "coord_features": 8,
                                 "sentence": True},
    "relative/both/sentence": {"boxes": "relative", "reads": "both", "coord_features": 8,
                               "sentence": True},
}


def judge_layouts(pipe: Any, n: int, temperature: float = 1.0) -> dict[str, Any]:
    """Layout-stage accuracy per suite (judge's summary: overall, categories, languages)."""
    out: dict[str, Any] = {}
    for name in SUITES:
        suite = load_suite(name)
        rows, misses = [], []
        for p in suite.prompts:
            for seed in suite.seeds(p, n, 0):
                layout = pipe.plan(p.prompt, seed, temperature).to_json()
                ok = judge(render_layout(layout), p.scene).correct
                rows.append((p.category, p.language, p.held_out, ok))
                if not ok and len(misses) < 12:
                    misses.append({"prompt": p.prompt, "seed": seed, "layout": layout})
        out[name] = {"judge": score(rows), "misses": misses}
    return out


def train_planner(budget: float, seed: int = 0, **settings: Any) -> tuple[Any, dict[str, Any]]:
    """A grounded pipeline whose layout stage alone was trained for `budget` seconds."""
    from gambar.generators.grounded.pipeline import GroundedPipeline
    from gambar.generators.grounded.training import GroundedTask, planner_batch

    recipe = tomllib.loads(Path("configs/default-v2.toml").read_text())
    recipe["planner"] = {**recipe.get("planner", {}), **settings}
    torch.manual_seed(seed)
    task = GroundedTask(recipe)
    planner, frozen = task.model.planner, task.text.frozen
    opt = torch.optim.AdamW(planner.parameters(), lr=1e-3, weight_decay=0.0)
    batches = task.batches(0, 0, 1, 32)
    start, steps, losses = time.monotonic(), 0, []
    while time.monotonic() - start < budget:
        batch = next(batches)
        states, mask, targets = planner_batch(frozen, batch["captions"], batch["layouts"],
                                              planner.cfg)
        loss = planner.loss(states, mask, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(planner.parameters(), 1.0)
        opt.step()
        steps += 1
        losses.append(loss.item())
    pipe = GroundedPipeline(task.model, task.text, task.cfg, name="planner-ablation")
    tail = losses[-50:]
    return pipe, {"planner": settings, "steps": steps,
                  "wall_time_s": round(time.monotonic() - start, 1),
                  "final_loss": round(sum(tail) / len(tail), 4),
                  "parameters": sum(p.numel() for p in planner.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a grounded model directory or built-in name")
    parser.add_argument("--ablation", action="store_true", help="train and compare variants")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per variant")
    parser.add_argument("--n", type=int, default=4, help="seeds per prompt")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result: dict[str, Any] = {"n_per_prompt": args.n, "temperature": args.temperature}
    if args.model:
        import gambar

        pipe = gambar.load(args.model)
        result["model"] = {"name": pipe.name, "sha256": pipe.sha256}
        result["layout_stage"] = judge_layouts(pipe, args.n, args.temperature)
    if args.ablation:
        result["ablation"] = {}
        for name, planner in VARIANTS.items():
            pipe, info = train_planner(args.budget, **planner)
            result["ablation"][name] = {**info, **judge_layouts(pipe, args.n, args.temperature)}
            print(json.dumps({name: {s: result["ablation"][name][s]["judge"]["overall"]
                                     for s in SUITES}}), flush=True)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
