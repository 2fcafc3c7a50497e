"""Bigger images, side by side in one run (issue 13 item 5): a cascade against its base's images
resized with Lanczos, and each super-resolution stage alone against Lanczos.

1. At the cascade's largest size, for shapes-core's prompts and seeds: the judge's score (the
   judge scales every image to 64 px), FID/KID in gambar's contrastive features against
   ground-truth renders at that size, and seconds per image, for
     - cascade: the model drawing at that size (base, then every stage);
     - lanczos: the same base images (same seeds) resized with Lanczos;
     - latent (`--latent MODEL`): a latent diffusion model at its own size (and resized to the
       cascade's when they differ), with its autoencoder's reconstruction PSNR and FID;
   and the base's own score at its size (the bar: cascade >= base - 0.03).
2. Each stage alone on held-out renders (reference seeds no training stream uses): the render
   at the stage's size is the truth, its box-downsampled copy the input; the stage and Lanczos
   are compared by PSNR, edge error (mean absolute error of neighbouring-pixel differences:
   blur, ringing and noise count), edge sharpness (gradient on the truth's edges relative to
   the truth's: blur lowers it) and FID against the truths.
3. `--levels`: the first stage's noise-augmentation level swept on the base's own images (the
   input it meets in use): judge score and FID at its size per level; the level with the best
   FID is what scripts/build_cascade.py --aug-level stores.

    python benchmarks/cascade.py --model runs/cascade --latent latent --n 1 --out cascade.json
    python benchmarks/cascade.py --model runs/cascade --levels 0 0.05 0.1 0.2 0.3 --levels-only

Prints (and with --out writes) one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

import gambar
from gambar.contrastive.model import ContrastiveModel, load_contrastive
from gambar.evaluation.compositional import judge, score
from gambar.evaluation.fid import feature_extractor, fid_kid
from gambar.evaluation.harness import reference_image
from gambar.evaluation.suites import SuitePrompt, load_suite
from gambar.generators.diffusion.cascade import stage_sizes


def _judged(images: Sequence[Image.Image], jobs: Sequence[tuple[SuitePrompt, int]]
            ) -> dict[str, Any]:
    figures = score((p.category, p.language, p.held_out, judge(im, p.scene).correct)
                    for im, (p, _) in zip(images, jobs, strict=True))
    return {"overall": figures["overall"], "categories": figures["categories"],
            "heldout": figures["heldout"]["overall"]}


def _fid(real: Sequence[Image.Image], fake: Sequence[Image.Image], clip: ContrastiveModel
         ) -> dict[str, float]:
    out = fid_kid(real, fake, feature_extractor(clip), seed=0)
    return {"fid": round(out["fid"], 4), "kid": round(out["kid_mean"], 5)}


def _array(images: Sequence[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB"), dtype=np.float64) / 255 for im in images])


def psnr(images: Sequence[Image.Image], truths: Sequence[Image.Image]) -> float:
    mse = float(np.mean((_array(images) - _array(truths)) ** 2))
    return round(10 * np.log10(1 / max(mse, 1e-12)), 3)


def edge_error(images: Sequence[Image.Image], truths: Sequence[Image.Image]) -> float:
    """Mean absolute error of horizontal and vertical neighbour differences (0..1 scale)."""
    x, t = _array(images), _array(truths)
    dy = np.abs(np.diff(x, axis=1) - np.diff(t, axis=1)).mean()
    dx = np.abs(np.diff(x, axis=2) - np.diff(t, axis=2)).mean()
    return round(float(dx + dy), 5)


def edge_sharpness(images: Sequence[Image.Image], truths: Sequence[Image.Image]) -> float:
    """Gradient magnitude on the truth's edges (its strongest 5 % of gradients), relative to
    the truth's own there: 1 is as sharp as the truth, below 1 blurred."""
    def grad(a: np.ndarray) -> np.ndarray:
        gy = np.abs(np.diff(a, axis=1))[:, :, :-1]
        gx = np.abs(np.diff(a, axis=2))[:, :-1, :]
        return (gx + gy).sum(axis=-1)

    g, t = grad(_array(images)), grad(_array(truths))
    edges = t >= np.quantile(t, 0.95)
    return round(float(g[edges].sum() / t[edges].sum()), 4)


def lanczos(images: Sequence[Image.Image], size: int) -> list[Image.Image]:
    return [im.resize((size, size), Image.Resampling.LANCZOS) for im in images]


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def at_largest(pipe: Any, jobs: list[tuple[SuitePrompt, int]], clip: ContrastiveModel,
               batch: int) -> dict[str, Any]:
    prompts, seeds = [p.prompt for p, _ in jobs], [s for _, s in jobs]
    base_size = pipe.cfg.image_size
    size = stage_sizes(base_size, pipe.stages)[-1]
    base, t_base = timed(lambda: pipe.generate(prompts, seeds=seeds, batch_size=batch,
                                               progress=False))
    raised, t_cascade = timed(lambda: pipe.generate(prompts, seeds=seeds, size=size,
                                                    batch_size=batch, progress=False))
    base_images = [g.image for g in base]
    resized, t_resize = timed(lambda: lanczos(base_images, size))
    truths = [reference_image(p.scene, s, size) for p, s in jobs]
    n = len(jobs)
    return {
        "size": size, "base_size": base_size, "images": n,
        "base": {**_judged(base_images, jobs), "s_per_image": round(t_base / n, 3)},
        "cascade": {**_judged([g.image for g in raised], jobs),
                    **_fid(truths, [g.image for g in raised], clip),
                    "s_per_image": round(t_cascade / n, 3)},
        "lanczos": {**_judged(resized, jobs), **_fid(truths, resized, clip),
                    "s_per_image": round((t_base + t_resize) / n, 3)},
        "stage_settings": base_and_stages(raised[0].provenance),
    }


def latent_column(latent: Any, jobs: list[tuple[SuitePrompt, int]], clip: ContrastiveModel,
                  size: int, batch: int) -> dict[str, Any]:
    """A latent model beside the cascade: drawn at its own size (Lanczos-resized to `size` when
    that differs), and its autoencoder's reconstructions of the ground-truth renders."""
    prompts, seeds = [p.prompt for p, _ in jobs], [s for _, s in jobs]
    native = latent.cfg.image_size
    drawn, t = timed(lambda: latent.generate(prompts, seeds=seeds, batch_size=batch,
                                             progress=False))
    images = [g.image for g in drawn]
    truths = [reference_image(p.scene, s, native) for p, s in jobs]
    out: dict[str, Any] = {
        "model": {"name": latent.name, "sha256": latent.sha256}, "size": native,
        **_judged(images, jobs), **_fid(truths, images, clip),
        "s_per_image": round(t / len(jobs), 3),
        "settings": {k: getattr(latent.default_options, k)
                     for k in ("sampler", "steps", "guidance")},
        "autoencoder": reconstructions(latent.autoencoder, truths, clip)}
    if size != native:
        resized = lanczos(images, size)
        at_size = [reference_image(p.scene, s, size) for p, s in jobs]
        out[f"lanczos_to_{size}"] = {**_judged(resized, jobs), **_fid(at_size, resized, clip)}
    return out


@torch.no_grad()
def reconstructions(autoencoder: Any, truths: Sequence[Image.Image], clip: ContrastiveModel
                    ) -> dict[str, Any]:
    """PSNR and FID of the autoencoder's reconstructions against the images it encoded."""
    from gambar.tensors import to_image, to_tensor

    recon = [to_image(autoencoder.decode(autoencoder.encode(to_tensor(im)[None]))[0]
                      .clamp(-1, 1)) for im in truths]
    return {"psnr": psnr(recon, truths), "edge_error": edge_error(recon, truths),
            **_fid(truths, recon, clip)}


def base_and_stages(provenance: dict[str, Any]) -> dict[str, Any]:
    return {"base": {k: provenance[k] for k in ("sampler", "steps", "guidance")},
            "stages": provenance.get("cascade", [])}


def stages_alone(pipe: Any, jobs: list[tuple[SuitePrompt, int]], clip: ContrastiveModel,
                 batch: int) -> list[dict[str, Any]]:
    out = []
    for stage, size in zip(pipe.stages, stage_sizes(pipe.cfg.image_size, pipe.stages),
                           strict=True):
        factor = stage.superres.factor
        truths = [reference_image(p.scene, s, size) for p, s in jobs]
        lows = [im.reduce(factor) for im in truths]  # box filter, as the stage was trained
        drawn, t = timed(lambda stage=stage, lows=lows, size=size: stage.draw(
            [p.prompt for p, _ in jobs], [s for _, s in jobs],
            stage.default_options.with_changes({"size": size}), {"image": lows}, batch,
            False))
        raised = [g.image for g in drawn]
        resized = lanczos(lows, size)
        out.append({
            "size": size, "factor": factor, "images": len(jobs),
            "stage": {"psnr": psnr(raised, truths), "edge_error": edge_error(raised, truths),
                      "edge_sharpness": edge_sharpness(raised, truths),
                      **_fid(truths, raised, clip), "s_per_image": round(t / len(jobs), 3)},
            "lanczos": {"psnr": psnr(resized, truths), "edge_error": edge_error(resized, truths),
                        "edge_sharpness": edge_sharpness(resized, truths),
                        **_fid(truths, resized, clip)},
            "settings": {k: getattr(stage.default_options, k)
                         for k in ("sampler", "steps", "guidance", "aug_level")},
        })
    return out


def level_sweep(pipe: Any, jobs: list[tuple[SuitePrompt, int]], clip: ContrastiveModel,
                levels: Sequence[float], batch: int) -> dict[str, Any]:
    stage = pipe.stages[0]
    size = pipe.cfg.image_size * stage.superres.factor
    prompts, seeds = [p.prompt for p, _ in jobs], [s for _, s in jobs]
    base = [g.image for g in pipe.generate(prompts, seeds=seeds, batch_size=batch,
                                           progress=False)]
    truths = [reference_image(p.scene, s, size) for p, s in jobs]
    rows = {}
    for level in levels:
        opts = stage.default_options.with_changes({"size": size, "aug_level": level})
        raised = [g.image for g in stage.draw(prompts, seeds, opts, {"image": base}, batch,
                                              False)]
        rows[str(level)] = {**_judged(raised, jobs), **_fid(truths, raised, clip)}
    best = min(rows, key=lambda k: rows[k]["fid"])
    return {"size": size, "levels": rows, "best_fid": float(best)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="a model with a cascade")
    parser.add_argument("--clip", default="contrastive", help="FID's feature model")
    parser.add_argument("--suite", default="shapes-core")
    parser.add_argument("--n", type=int, default=1, help="seeds per prompt")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--levels", type=float, nargs="*", default=None,
                        help="also sweep the first stage's augmentation level over these")
    parser.add_argument("--levels-only", action="store_true",
                        help="with --levels: only the sweep (to choose the level first)")
    parser.add_argument("--latent", help="a latent model to set beside the cascade (e.g. latent)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    torch.manual_seed(0)
    pipe = gambar.load(args.model)
    if not getattr(pipe, "stages", None):
        parser.error(f"{args.model} has no cascade stages (scripts/build_cascade.py adds them)")
    clip = load_contrastive(args.clip)
    suite = load_suite(args.suite)
    jobs = [(p, s) for p in suite.prompts for s in suite.seeds(p, args.n, 0)]
    result: dict[str, Any] = {
        "model": {"name": pipe.name, "sha256": pipe.sha256}, "suite": args.suite, "n": args.n,
        "threads": torch.get_num_threads()}
    if not args.levels_only:
        result["at_largest"] = at_largest(pipe, jobs, clip, args.batch)
        result["stages_alone"] = stages_alone(pipe, jobs, clip, args.batch)
        if args.latent:
            result["latent"] = latent_column(gambar.load(args.latent), jobs, clip,
                                             result["at_largest"]["size"], args.batch)
    if args.levels:
        result["aug_level_sweep"] = level_sweep(pipe, jobs, clip, args.levels, args.batch)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
