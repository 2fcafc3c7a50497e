"""Does gambar's own CLIP-like model make sound FID features and know emoji names? Measured.

Prints one JSON object:
- FID/KID between the shapes train and test splits (should be small: same distribution), beside
  FID between two halves of train (the noise floor at this sample size);
- FID of clean test images against blurred and noised copies, per level (should grow
  monotonically with the damage), and whether it does;
- emoji R-precision: for each real emoji image of a split, its name against 99 names of other
  emoji (other variant groups), English and Indonesian; chance is 0.01. The train split shows
  what the model learned, val/test how it reads names it never saw;
- with --generator, the same R-precision on that model's image of each emoji's caption, and
  FID of those images against the real ones (issue 7's emoji figures).

    python benchmarks/clip_checks.py --clip runs/contrastive/model --n 1000 --split train \
        --emoji-limit 500 [--generator default]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from PIL import Image, ImageFilter

from gambar.contrastive.model import load_contrastive
from gambar.data.emoji import emoji_records
from gambar.data.loading import load_record_image
from gambar.data.shapes import fixed_split
from gambar.evaluation.clip_score import name_r_precision
from gambar.evaluation.fid import feature_extractor, fid_kid

BLUR_RADII = (0.5, 1.0, 2.0, 3.0)
NOISE_SIGMAS = (4, 8, 16, 32, 64)  # in 8-bit levels


def noised(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    x = np.asarray(image, dtype=np.float32) + rng.normal(0, sigma, (*image.size[::-1], 3))
    return Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8))


def monotone(values: list[float]) -> bool:
    return all(a < b for a, b in zip(values, values[1:], strict=False))


def fid_checks(model, n: int) -> dict:
    extractor = feature_extractor(model)
    train = [s.image for s in fixed_split("train", 2 * n)]
    test = [s.image for s in fixed_split("test", n)]
    out = {"n": n,
           "train_vs_test": fid_kid(train[:n], test, extractor),
           "train_half_vs_half": fid_kid(train[:n], train[n:], extractor)}
    blur = {r: fid_kid(test, [im.filter(ImageFilter.GaussianBlur(r)) for im in test],
                       extractor, kid=False)["fid"] for r in BLUR_RADII}
    rng = np.random.default_rng(0)
    noise = {s: fid_kid(test, [noised(im, s, rng) for im in test], extractor, kid=False)["fid"]
             for s in NOISE_SIGMAS}
    out["blur_radius_to_fid"] = blur
    out["noise_sigma_to_fid"] = noise
    out["monotone"] = {"blur": monotone(list(blur.values())),
                       "noise": monotone(list(noise.values()))}
    return out


def emoji_images(split: str, limit: int | None) -> tuple[list, list[dict]]:
    records = emoji_records(split, size=64)[:limit]
    return [load_record_image(r) for r in records], [r.metadata for r in records]


def emoji_r_precision(model, images, metadata) -> dict:
    """Name R-precision in both languages (1 true name among 100); chance is 0.01."""
    groups = [m["variant_group"] for m in metadata]
    out = {"n": len(images)}
    for lang, field in (("en", "name"), ("id", "name_id")):
        names = [str(m[field]) for m in metadata]
        out[lang] = float(np.mean(name_r_precision(model, images, names, groups)))
    return out


def generated_emoji(generator: str, metadata: list[dict], seed: int) -> list:
    """The generator's image for each emoji's first English caption (seed + i)."""
    import gambar

    pipe = gambar.load(generator)
    names = [str(m["text"]) for m in metadata]  # the caption training shows first: "a red apple"
    return [g.image for g in pipe.generate(names, seeds=[seed + i for i in range(len(names))])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="contrastive", help="contrastive model name or path")
    parser.add_argument("--n", type=int, default=1000, help="images per FID set")
    parser.add_argument("--split", default="train", help="emoji split for R-precision")
    parser.add_argument("--emoji-limit", type=int, default=None, help="first N emoji only")
    parser.add_argument("--generator", help="also score this model's images of the emoji names")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_contrastive(args.clip)
    start = time.perf_counter()
    with torch.no_grad():
        images, metadata = emoji_images(args.split, args.emoji_limit)
        result = {"clip": model.name, "clip_sha256": model.sha256[:12], "emoji_split": args.split,
                  "fid": fid_checks(model, args.n),
                  "emoji_r_precision_real": emoji_r_precision(model, images, metadata)}
        if args.generator:
            drawn = generated_emoji(args.generator, metadata, seed=0)
            result["generator"] = args.generator
            result["emoji_r_precision_generated"] = emoji_r_precision(model, drawn, metadata)
            result["emoji_fid_generated_vs_real"] = fid_kid(
                images, drawn, feature_extractor(model))
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
