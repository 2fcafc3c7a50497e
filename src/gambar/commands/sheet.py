"""`gambar sheet`: a labelled grid of prompts x seeds from one model, with provenance."""

from __future__ import annotations

import argparse
from pathlib import Path

from gambar.commands.options import check_early, given_options
from gambar.errors import InvalidInputError
from gambar.fsutil import check_writable, is_file
from gambar.pipeline import load
from gambar.provenance import save_png
from gambar.seeding import check_seed
from gambar.sheet import DEFAULT_PROMPTS, SheetLayout, compose_sheet, label
from gambar.text.checks import check_prompt

MAX_SCALE = 16  # a 64 px image drawn 16x is 1024 px; more only makes a huge file
MAX_SHEET_PIXELS = 100 * 10**6  # the images' area: ~300 MB in memory; the default sheet is 0.9 M


def read_prompt_file(path: str | Path) -> list[str]:
    """The prompts of a text file: one per line; blank lines and # comments skipped."""
    path = Path(path)
    if not is_file(path):
        raise InvalidInputError(f"prompts file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path} is not UTF-8 text (byte {exc.start}); save it as "
                                "UTF-8") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror}") from None
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]


def read_prompts(args: argparse.Namespace) -> list[str]:
    """Prompts from the command line, a file (one per line, # comments), or the defaults."""
    if args.prompts_file:
        prompts = read_prompt_file(args.prompts_file)
    else:
        prompts = list(args.prompts or DEFAULT_PROMPTS)
    if not prompts:
        raise InvalidInputError("no prompts to draw")
    for prompt in prompts:
        check_prompt(prompt, f"the prompt {prompt!r}")
    return prompts


def run_sheet(args: argparse.Namespace) -> Path:
    """Draw every prompt with every seed and write one labelled PNG."""
    prompts = read_prompts(args)
    seeds = [check_seed(s) for s in args.seeds]
    if not seeds:
        raise InvalidInputError("give at least one seed")
    if not 1 <= args.scale <= MAX_SCALE:
        raise InvalidInputError(f"--scale must be between 1 and {MAX_SCALE}, not {args.scale}")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise InvalidInputError(f"-o must be a .png file, not {args.out!r}")
    check_writable(out)
    if out.exists() and not args.overwrite:
        raise InvalidInputError(f"{out} exists; pass --overwrite to replace it")
    options = given_options(args)
    check_early(args.model, options)
    pipe = load(args.model)
    side = int(pipe.default_options.with_changes(options).size) * args.scale
    if len(prompts) * len(seeds) * side**2 > MAX_SHEET_PIXELS:
        raise InvalidInputError(
            f"{len(prompts)} prompts x {len(seeds)} seeds of {side} px would make a sheet of "
            f"over {MAX_SHEET_PIXELS // 10**6} million pixels; use fewer or a smaller --scale")
    flat = pipe.generate([p for p in prompts for _ in seeds], seeds=seeds * len(prompts),
                         progress=not args.quiet, **options)
    rows = [flat[i * len(seeds):(i + 1) * len(seeds)] for i in range(len(prompts))]
    labels = [label(p, row) for p, row in zip(prompts, rows, strict=True)]
    sheet = compose_sheet(rows, labels, seeds, SheetLayout(scale=args.scale))
    save_png(out, sheet, {"sheet_of": [g.provenance for g in flat]}, overwrite=args.overwrite)
    print(out)
    return out
