"""Which sampler, step count and guidance scale should be the defaults? Measured, not guessed.

For a saved model, draws one image per prompt of a fixed prompt set (English and Indonesian,
the five shapes categories, no held-out pairs) under each setting, judges every image with the
shapes judge, and prints one JSON line per setting: compositional overall and seconds per image.

    python benchmarks/sampler_settings.py --model default --prompts 40
    python benchmarks/sampler_settings.py --settings dpmpp:10:2 dpmpp:20:2  # SAMPLER:STEPS:GUIDANCE
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import gambar
from gambar.data.shapes import describe, sample_scene
from gambar.evaluation.compositional import judge, score

SETTINGS = [
    ("ddim", 100, 4.0), ("dpmpp", 10, 4.0), ("dpmpp", 20, 4.0), ("dpmpp", 30, 4.0),
    ("euler", 20, 4.0), ("dpmpp", 20, 1.0), ("dpmpp", 20, 2.0), ("dpmpp", 20, 6.0),
]


def prompt_set(n: int, seed: int = 1234) -> list[tuple[str, str, str]]:
    """n (prompt, language, category) triples, half English, half Indonesian."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        scene = sample_scene(rng, combine=0.0)
        lang = "en" if i % 2 == 0 else "id"
        out.append((describe(scene, lang), lang, scene.category))
    return out


def parse_setting(text: str) -> tuple[str, int, float]:
    """"dpmpp:10:2" -> ("dpmpp", 10, 2.0)."""
    try:
        sampler, steps, guidance = text.split(":")
        return sampler, int(steps), float(guidance)
    except ValueError:
        raise SystemExit(
            f"error: a setting is SAMPLER:STEPS:GUIDANCE, e.g. dpmpp:10:2, not {text!r}"
        ) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--settings", nargs="+", metavar="SAMPLER:STEPS:GUIDANCE",
                        help="settings to compare (default: a fixed grid of samplers, steps "
                             "and guidance scales)")
    args = parser.parse_args()
    settings = SETTINGS if not args.settings else [parse_setting(s) for s in args.settings]
    torch.set_num_threads(args.threads)
    pipe = gambar.load(args.model)
    prompts = prompt_set(args.prompts)
    seeds = list(range(len(prompts)))
    for sampler, steps, guidance in settings:
        start = time.perf_counter()
        out = pipe.generate([p for p, _, _ in prompts], seeds=seeds, sampler=sampler,
                            steps=steps, guidance=guidance, progress=False)
        per_image = (time.perf_counter() - start) / len(out)
        rows = [(cat, lang, False, judge(o.image, p).correct)
                for o, (p, lang, cat) in zip(out, prompts, strict=True)]
        s = score(rows)
        print(json.dumps({"sampler": sampler, "steps": steps, "guidance": guidance,
                          "overall": round(s["overall"], 3),
                          "categories": {k: round(v, 3) for k, v in s["categories"].items()},
                          "seconds_per_image": round(per_image, 3)}), flush=True)


if __name__ == "__main__":
    main()
