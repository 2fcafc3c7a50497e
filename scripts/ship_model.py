"""Copy a trained model directory into the package as a built-in model, stored in fp16.

    python scripts/ship_model.py runs/default/model src/gambar/weights/default
    python scripts/ship_model.py runs/contrastive/model src/gambar/weights/contrastive
    python scripts/ship_model.py runs/default/model src/gambar/weights/default --default steps=12

`--default KEY=VALUE` sets a generation default of the shipped model (any of its family's
options: steps, guidance, sampler, precision ...), chosen by measurement after training
(benchmarks/sampler_settings.py); it is stored in config.json, so the model hash covers it.
Weights are rounded to fp16 for storage (loading gives fp32 again); the model card (README.md)
already in the destination is kept; SHA256SUMS, the manifest every load checks, is written with
the files. The new directory is loaded back (every check a user's load makes) and only then
replaces the old one, atomically; a bad --default value is a one-line error that leaves the old
one in place. Prints the new model hash and the size of the weights.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from gambar.errors import GambarError
from gambar.fsutil import replace_dir
from gambar.model_dir import MANIFEST, read_config
from gambar.registry import is_generator, model_class


def parse_default(text: str) -> tuple[str, object]:
    """"steps=12" -> ("steps", 12); "sampler=ddim" -> ("sampler", "ddim")."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare word such as ddim


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a saved model directory (e.g. runs/x/model)")
    parser.add_argument("dest", type=Path, help="the built-in model directory to write")
    parser.add_argument("--default", type=parse_default, action="append", default=[],
                        metavar="KEY=VALUE",
                        help="a generation default to store: one of the family's options "
                        "(e.g. steps, guidance, sampler); repeatable")
    args = parser.parse_args()
    try:
        family = read_config(args.source)["family"]
        model = model_class(family).load(args.source)
    except GambarError as exc:
        parser.exit(2, f"error: {exc}\n")
    if args.default:
        if not is_generator(family):
            parser.error(f"--default applies to image generators, not {family} models")
        defaults = {**model.extra.get("defaults", {}), **dict(args.default)}
        try:  # the family's Options check names, types and bounds, as at load time
            model.default_options.with_stored(defaults, where=f"--default for {args.source}")
        except GambarError as exc:
            parser.exit(2, f"error: {exc}\n")
        model.extra["defaults"] = defaults
    args.dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dest.parent) as tmp:
        staged = Path(tmp) / args.dest.name
        model.save(staged, dtype=torch.float16)
        try:
            model_class(family).load(staged)
        except GambarError as exc:
            parser.exit(2, f"error: the shipped model would not load ({exc}); nothing written\n")
        card = args.dest / "README.md"
        if card.is_file():
            shutil.copy2(card, staged / "README.md")
        replace_dir(staged, args.dest)
    size = sum(f.stat().st_size for f in args.dest.glob("*.safetensors")) / 2**20  # all components
    print(f"{args.dest}: {family} model {model.sha256[:12]}, weights {size:.1f} MiB (fp16), "
          f"{MANIFEST} written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
