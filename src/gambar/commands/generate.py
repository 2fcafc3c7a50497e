"""`gambar generate`: prompt -> PNG files with provenance (and replay from a PNG)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from gambar.commands.options import check_early, flag_of, given_options
from gambar.errors import InvalidInputError
from gambar.fsutil import check_writable
from gambar.inputs import INPUTS, digest, read_input
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
    inputs = {name: read_input(name, getattr(args, name)) for name in INPUTS
              if getattr(args, name, None) is not None}
    if args.replay:
        _check_replay_args(args)
        replay = replay_settings(read_provenance(Path(args.replay)), args.replay)
        prompt, options, seeds = replay.prompt, replay.options, [replay.seed]
        _check_replay_inputs(args.replay, replay.inputs, inputs)
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
        options = given_options(args)
        expected = None
    # Checked here as well as by the pipeline: a mistake costs no model load, no sampling.
    check_prompt(prompt)
    check_early(args.model, options, inputs)
    paths = output_paths(prompt, seeds, args.output)
    grid_path = paths[0].with_name(paths[0].stem.rsplit("-", 1)[0] + "-grid.png")
    check_outputs(paths + ([grid_path] if args.grid and len(paths) > 1 else []), args.overwrite)

    pipe = load(args.model)
    if expected is not None and expected != pipe.sha256:
        raise InvalidInputError(
            f"{args.replay} was made by model {expected[:12]}, but {args.model!r} is "
            f"{pipe.sha256[:12]}; pass --model with the model that made it")
    results = pipe.generate([prompt] * len(seeds), seeds=seeds, batch_size=args.batch_size,
                            inputs=inputs, progress=not args.quiet, **options)
    for path, gen in zip(paths, results, strict=True):
        save_png(path, gen.frames, gen.provenance, overwrite=args.overwrite)
        print(path)
    if args.grid and len(results) > 1:
        _write_grid(grid_path, results, args.overwrite)
        print(grid_path)
    return paths


def _check_replay_args(args: argparse.Namespace) -> None:
    """--replay takes the prompt, seed and options from the image: refuse others, never drop
    them silently (inputs and output flags are what a replay does take)."""
    given = [flag_of(name) for name in given_options(args)]
    if args.prompt is not None:
        given.insert(0, "a prompt")
    if args.seed is not None:
        given.append("--seed")
    if args.num_images != 1:
        given.append("-n")
    if given:
        raise InvalidInputError(f"--replay takes the prompt, seed and options from "
                                f"{args.replay}; leave out {given[0]}")


def _check_replay_inputs(where: str, recorded: dict[str, str], given: dict[str, Any]) -> None:
    """A replay needs the very inputs the image was drawn from: same names, same content."""
    for name, expected in recorded.items():
        if name not in given:
            raise InvalidInputError(f"{where} was drawn from a {name!r} input; pass the same "
                                    f"file with --{name}")
        if digest(given[name]) != expected:
            raise InvalidInputError(f"--{name} differs from the {name!r} input {where} was "
                                    f"drawn from (sha256 {expected[:12]}); pass the same file")
    extra = sorted(set(given) - set(recorded))
    if extra:
        raise InvalidInputError(f"{where} was drawn without a {extra[0]!r} input; leave out "
                                f"--{extra[0]}")


def _write_grid(path: Path, results: list[Generated], overwrite: bool) -> None:
    from gambar.imaging import make_grid

    cols = min(len(results), 4)
    grid = make_grid([g.image for g in results], cols=cols)
    save_png(path, grid, {"grid_of": [g.provenance for g in results]}, overwrite=overwrite)
