"""`gambar generate`: prompt -> PNG files with provenance (and replay from a PNG)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from gambar.errors import InvalidInputError
from gambar.fsutil import check_writable
from gambar.pipeline import Generated, load
from gambar.provenance import read_provenance, replay_settings, save_png
from gambar.seeding import check_seed, random_seed
from gambar.text.checks import check_prompt

OUTPUT_DIR = Path("outputs")
MAX_IMAGES = 64


def slug(prompt: str, limit: int = 60) -> str:
    """A file-name-safe version of a prompt: "A red circle!" -> "a-red-circle".

    At most `limit` characters and 2 * `limit` UTF-8 bytes: file names are capped in bytes
    (255), and a prompt in 4-byte letters (pasted "bold" text) must still get a usable name."""
    text = re.sub(r"[^\w]+", "-", prompt.lower(), flags=re.UNICODE).strip("-_")[:limit]
    while len(text.encode("utf-8", "surrogatepass")) > 2 * limit:
        text = text[:-1]
    return text.rstrip("-") or "image"


def output_paths(prompt: str, seeds: list[int], output: str | None) -> list[Path]:
    """Where each image goes: -o FILE (FILE-k.png when several) or outputs/<prompt>-<seed>.png."""
    if output is None:
        return [OUTPUT_DIR / f"{slug(prompt)}-{s}.png" for s in seeds]
    out = Path(output)
    if out.suffix.lower() != ".png":
        raise InvalidInputError(f"output must be a .png file, not {output!r}")
    if len(seeds) == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{k}{out.suffix}") for k in range(len(seeds))]


def check_outputs(paths: list[Path], overwrite: bool) -> None:
    """Refuse, before any work, outputs that exist (without --overwrite) or cannot be written."""
    for path in paths:
        check_writable(path)
    taken = [p for p in paths if p.exists()]
    if taken and not overwrite:
        raise InvalidInputError(
            f"{taken[0]} already exists; choose another -o, another --seed, or pass --overwrite")


def run_generate(args: argparse.Namespace) -> list[Path]:
    """Generate and write images; returns the paths written."""
    if args.replay:
        replay = replay_settings(read_provenance(Path(args.replay)), args.replay)
        prompt, options, seeds = replay.prompt, replay.options, [replay.seed]
        expected = replay.model_sha256
    else:
        if args.prompt is None:
            raise InvalidInputError(
                'give a prompt, e.g. gambar generate "a red circle", or --replay IMAGE.png')
        prompt = args.prompt
        if not 1 <= args.num_images <= MAX_IMAGES:
            raise InvalidInputError(f"-n must be between 1 and {MAX_IMAGES}, not {args.num_images}")
        first = check_seed(args.seed) if args.seed is not None else random_seed()
        seeds = [first + k for k in range(args.num_images)]
        options = {"negative_prompt": args.negative, "steps": args.steps,
                   "guidance": args.guidance, "sampler": args.sampler, "size": args.size,
                   "precision": args.precision}
        expected = None
    # Checked here as well as by the pipeline: a mistake costs no model load, no sampling.
    check_prompt(prompt)
    paths = output_paths(prompt, seeds, args.output)
    grid_path = paths[0].with_name(paths[0].stem.rsplit("-", 1)[0] + "-grid.png")
    check_outputs(paths + ([grid_path] if args.grid and len(paths) > 1 else []), args.overwrite)

    pipe = load(args.model)
    if expected is not None and expected != pipe.sha256:
        raise InvalidInputError(
            f"{args.replay} was made by model {expected[:12]}, but {args.model!r} is "
            f"{pipe.sha256[:12]}; pass --model with the model that made it")
    results = pipe.generate([prompt] * len(seeds), seeds=seeds, batch_size=args.batch_size,
                            progress=not args.quiet, **options)
    for path, gen in zip(paths, results, strict=True):
        save_png(path, gen.image, gen.provenance, overwrite=args.overwrite)
        print(path)
    if args.grid and len(results) > 1:
        _write_grid(grid_path, results, args.overwrite)
        print(grid_path)
    return paths


def _write_grid(path: Path, results: list[Generated], overwrite: bool) -> None:
    from gambar.imaging import make_grid

    cols = min(len(results), 4)
    grid = make_grid([g.image for g in results], cols=cols)
    save_png(path, grid, {"grid_of": [g.provenance for g in results]}, overwrite=overwrite)
