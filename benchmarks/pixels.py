"""Pixel and provenance fingerprints of a model over fixed prompts, seeds and settings.

Run it on two trees to show a change left a model's images alone (same machine; a different
CPU may pick other kernels), e.g. before and after a refactor:

    PYTHONPATH=/path/to/old/src python benchmarks/pixels.py > old.json
    python benchmarks/pixels.py > new.json && diff old.json new.json
    python benchmarks/pixels.py --time 5       # + best seconds per image at batch 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time

import numpy as np
import torch

import gambar

# Every sampler, guidance on and off, a negative prompt, a batch of three.
CASES = [
    ("a red circle above a blue square", [0, 1, 2], {}),
    ("tiga bintang biru", [7], {"sampler": "ddim", "steps": 10, "eta": 0.5}),
    ("a green heart", [3], {"sampler": "ddpm", "steps": 8}),
    ("a yellow triangle", [4], {"sampler": "euler", "steps": 8, "guidance": 3.0}),
    ("two purple squares", [5], {"negative_prompt": "red", "steps": 6}),
    ("a small blue star", [6], {"guidance": 1.0, "steps": 6}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--time", type=int, default=0, metavar="N",
                        help="also time one image at batch 1 with the model's defaults, best of N "
                        "(run the two trees alternately: compare the ratio)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = gambar.load(args.model)
    out: dict[str, object] = {"model_sha256": pipe.sha256}
    for prompt, seeds, options in CASES:
        drawn = pipe.generate([prompt] * len(seeds), seeds=seeds, progress=False, **options)
        key = f"{prompt} | seeds {seeds} | {json.dumps(options, sort_keys=True)}"
        out[key] = {
            "pixels_sha256": [hashlib.sha256(np.asarray(g.image).tobytes()).hexdigest()[:16]
                              for g in drawn],
            "provenance_keys": sorted(drawn[0].provenance),
        }
    if args.time:
        def draw() -> None:
            pipe.generate([CASES[0][0]], seeds=[0], progress=False)

        draw()  # warm-up
        times = []
        for _ in range(args.time):
            start = time.perf_counter()
            draw()
            times.append(time.perf_counter() - start)
        out["seconds_per_image_best"] = round(min(times), 4)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
