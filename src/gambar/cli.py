"""`gambar` command line: parses arguments and calls one library function per command.

User mistakes (GambarError) become one line on stderr and exit code 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gambar.errors import GambarError

EPILOG = """examples:
  gambar generate "a red circle above a blue square"
  gambar generate "tiga bintang biru" -n 4 --seed 7 --grid
  gambar info outputs/a-red-circle-7.png
  gambar generate --replay outputs/a-red-circle-7.png
  gambar train configs/tiny.toml
"""


def _generate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate", help="draw images from a text prompt",
        description="Draw images from a prompt (English or Indonesian). Each PNG carries its "
        "provenance (prompt, seed, model hash, sampler, steps, guidance) in its metadata.",
    )
    p.add_argument("prompt", nargs="?",
                   help='what to draw, e.g. "a red circle above a blue square"')
    p.add_argument("-n", "--num-images", type=int, default=1, metavar="N",
                   help="how many images (seeds S, S+1, ...; default 1)")
    p.add_argument("--seed", type=int, help="seed of the first image (default: random, recorded)")
    p.add_argument("--steps", type=int, help="sampler steps (default: the model's, 20)")
    p.add_argument("--guidance", type=float,
                   help="classifier-free guidance scale; 1 = off (default: the model's)")
    p.add_argument("--sampler", choices=["dpmpp", "ddim", "ddpm", "euler"],
                   help="dpmpp = DPM-Solver++(2M) (default), ddim, ddpm (ancestral), euler")
    p.add_argument("--negative", default="", metavar="TEXT",
                   help="negative prompt: what the image should not look like")
    p.add_argument("--size", type=int, help="image side in pixels (default: the model's, 64)")
    p.add_argument("--model", default="default", metavar="NAME|PATH",
                   help="a built-in model name or a saved model directory (default: default)")
    p.add_argument("-o", "--output", metavar="FILE.png",
                   help="output file; with -n N writes FILE-0.png ... (default: outputs/)")
    p.add_argument("--grid", action="store_true", help="also write all images as one grid PNG")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--replay", metavar="IMAGE.png",
                   help="make the same image again from the provenance stored in IMAGE.png")
    p.add_argument("--batch-size", type=int, default=8, help="images per network batch")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model from a recipe (TOML)",
        description="Train from a recipe in configs/. Checkpoints are atomic; --resume continues "
        "an interrupted run exactly. Runs under `accelerate launch` for several processes.",
    )
    p.add_argument("recipe", help="recipe file, e.g. configs/tiny.toml")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set train.steps=500 (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gambar", description="Text-to-image models that run offline on a CPU.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _generate_parser(sub)
    _train_parser(sub)
    info = sub.add_parser("info", help="print the provenance stored in a generated PNG")
    info.add_argument("image", help="a PNG written by gambar")
    return parser


def _version() -> str:
    from gambar import __version__

    return f"gambar {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            from gambar.commands.generate import run_generate

            run_generate(args)
        elif args.command == "train":
            from gambar.commands.train import run_train

            run_train(args)
        elif args.command == "info":
            from gambar.provenance import format_provenance, read_provenance

            print(format_provenance(read_provenance(args.image)))
    except GambarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
