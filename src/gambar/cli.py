"""`gambar` command line: parses arguments and calls one library function per command.

User mistakes (GambarError) become one line on stderr and exit code 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from gambar.errors import GambarError

EPILOG = """examples:
  gambar generate "a red circle above a blue square"
  gambar generate "tiga bintang biru" -n 4 --seed 7 --grid
  gambar info outputs/a-red-circle-7.png
  gambar generate --replay outputs/a-red-circle-7.png
  gambar train configs/tiny.toml
  gambar sheet --seeds 0 1 2 3 -o sample-sheet.png
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
    _option_flags(p, inputs=True)
    _input_flags(p)
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


def _option_flags(p: argparse.ArgumentParser, *, inputs: bool = False) -> None:
    """One flag per generation option of every registered generator family, built from the
    families' Options classes (gambar.options): their help, bounds and choices. Unset flags
    stay None: the model's own defaults apply. A flag the chosen model's family lacks is a
    one-line error once the model is known. Without `inputs` (a command that takes none),
    options that need an input (img2img's --strength) are left out."""
    from gambar.options import KINDS, union_specs
    from gambar.registry import all_options

    families = all_options()
    group = p.add_argument_group("generation options (default: the model's own)")
    for spec, owners in union_specs(families).values():
        if spec.needs and not inputs:
            continue
        where = "" if len(owners) == len(families) else f" [{', '.join(owners)} models]"
        bounds = spec.describe_range()
        text = f"{spec.help}{' (' + bounds + ')' if bounds and not spec.choices else ''}{where}"
        kwargs: dict[str, Any] = {"dest": spec.name, "default": None, "help": text}
        if spec.kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            metavar = "TEXT" if spec.kind == "str" else spec.name.upper()
            kwargs.update(type=KINDS[spec.kind], metavar=metavar)
            if spec.choices:
                kwargs.update(choices=spec.choices, metavar=None)
        group.add_argument(spec.flag, **kwargs)


def _input_flags(p: argparse.ArgumentParser) -> None:
    """--init, --mask, --layout, --image: the named inputs a family may take (gambar.inputs)."""
    from gambar.inputs import INPUTS

    group = p.add_argument_group("inputs besides the prompt (only for models that take them)")
    for name, what in INPUTS.items():
        group.add_argument(f"--{name}", metavar="FILE.json" if name == "layout" else "IMAGE",
                           help=what)


def _sheet_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sheet", help="draw a labelled sample sheet (prompts x seeds)",
        description="Draw every prompt with every seed into one labelled PNG grid (rows: prompts, "
        "columns: seeds). Without prompts it draws a built-in set: English and Indonesian, every "
        "suite category, the held-out pairs (marked) and a few emoji names. The PNG keeps every "
        "image's provenance.",
    )
    p.add_argument("prompts", nargs="*", metavar="PROMPT", help="prompts, one row each")
    p.add_argument("--prompts-file", metavar="FILE", help="a text file with one prompt per line")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], metavar="S",
                   help="one column per seed (default: 0 1 2 3)")
    p.add_argument("--model", default="default", metavar="NAME|PATH",
                   help="a built-in model name or a saved model directory (default: default)")
    p.add_argument("-o", "--out", default="sample-sheet.png", metavar="FILE.png",
                   help="output file (default: sample-sheet.png)")
    p.add_argument("--scale", type=int, default=2, help="pixel scale of each image (default 2)")
    _option_flags(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _ab_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ab", help="human A/B judgement of two models (prepare pairs, serve a page, rank)",
        description="Human judgement: `prepare` draws the same prompts and seeds with two models "
        "into an SQLite database, `serve` shows the pairs on a local page (sides shuffled) and "
        "records which image a person prefers, `ranking` prints Bradley-Terry and Elo ratings.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    prep = actions.add_parser("prepare", help="draw pairs from two models")
    prep.add_argument("model_a", metavar="MODEL_A", help="a built-in model name or a directory")
    prep.add_argument("model_b", metavar="MODEL_B", help="the model to compare it with")
    prep.add_argument("--suite", default="shapes-core", help="suite whose prompts to draw")
    prep.add_argument("--per-category", type=int, default=2, metavar="K",
                      help="scenes per suite category, both languages (default 2)")
    prep.add_argument("--prompts-file", metavar="FILE", help="one prompt per line instead")
    prep.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="S",
                      help="seeds per prompt (default: 0)")
    serve = actions.add_parser("serve", help="serve the voting page")
    serve.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8001, help="port (default 8001)")
    rank = actions.add_parser("ranking", help="print the models' ranking from the votes so far")
    for action in (prep, serve, rank):
        action.add_argument("--db", default="ab/ab.sqlite",
                            help="the A/B database; images go beside it (default ab/ab.sqlite)")


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


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve a REST API and a web page",
        description="Serve models over HTTP: gambar's API (docs at /docs), a web page at /, and "
        "OpenAI- and AUTOMATIC1111-compatible endpoints. Jobs queue fairly between clients.",
    )
    p.add_argument("--model", action="append", metavar="NAME|PATH",
                   help="a model to serve (repeatable; the first is the default; default: default)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--token", action="append", metavar="TOKEN",
                   help="require 'Authorization: Bearer TOKEN' (repeatable, one per user; "
                   "default: $GAMBAR_TOKEN, comma-separated, or none)")
    p.add_argument("--results", metavar="DIR",
                   help="where images are kept (default: ~/.cache/gambar/results)")
    p.add_argument("--keep-hours", type=float, default=24.0,
                   help="delete results older than this (default: 24)")
    p.add_argument("--max-results-mb", type=float, default=1024.0,
                   help="delete the oldest results beyond this size (default: 1024)")
    p.add_argument("--queue-size", type=int, default=100,
                   help="jobs that may wait, all clients together (default: 100)")
    p.add_argument("--per-client", type=int, default=20,
                   help="jobs that may wait from one client, and from one token or address "
                   "(default: 20)")
    p.add_argument("--max-body-kb", type=int, default=1024,
                   help="answer 413 to request bodies larger than this (default: 1024)")
    p.add_argument("--workers", type=int, default=1,
                   help="threads that generate (default: 1; one already uses every core)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])


def _data_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data", help="build the emoji/glyph datasets; report on any dataset",
        description="Build paired (image, caption) datasets offline, or report on one in any "
        "supported format (imagefolder, COCO, CUB/Flowers, webdataset, emoji, glyphs).",
    )
    actions = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    b = actions.add_parser(
        "build", help="render the emoji or glyph dataset into a folder",
        description="Render a dataset into OUT/ (Hugging Face imagefolder: split folders with "
        "PNGs and metadata.jsonl, plus a README.md card). Same inputs, same bytes.",
    )
    b.add_argument("source", choices=["emoji", "glyphs"], help="which dataset")
    b.add_argument("out", metavar="OUT", help="output folder, e.g. data/emoji")
    b.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    b.add_argument("--background", choices=["white", "transparent"], default="white",
                   help="background of the images (default white)")
    b.add_argument("--limit", type=int, metavar="N", help="only the first N images (a quick look)")
    b.add_argument("--overwrite", action="store_true",
                   help="replace OUT if it is a dataset that gambar built")
    i = actions.add_parser(
        "info", help="counts, caption lengths and a sample grid of a dataset",
        description="Print images and captions per split, a caption-length histogram and any "
        "missing or unreadable images; write a grid of sample images.",
    )
    i.add_argument("path", metavar="PATH",
                   help="a dataset folder or file, coco:PATH, cub:PATH, webdataset:PATTERN, "
                   "emoji or glyphs")
    i.add_argument("--split", help="only this split (train, val, test)")
    i.add_argument("--grid", metavar="FILE.png",
                   help="where to write the sample grid (default: <name>-samples.png)")
    i.add_argument("--size", type=int, default=64, help="image side in the grid (default 64)")
    i.add_argument("--no-verify", action="store_true",
                   help="do not decode every image (faster; unreadable ones go unreported)")


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score a model on an evaluation suite, or compare two reports",
        description="Score a saved model on a versioned suite (the shapes judge; with a "
        "contrastive model also FID/KID, CLIP score, R-precision, diversity). Writes report.json "
        "and report.html and prints a table. A contrastive model directory gets its own "
        "zero-shot retrieval report. Same model, suite and seed give the same numbers.",
    )
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="a built-in model name or a saved model directory")
    p.add_argument("--suite", default="shapes-core",
                   help="suite name or JSON file (default: shapes-core)")
    p.add_argument("--n", type=int, default=4, help="images per prompt (default 4)")
    p.add_argument("--seed", type=int,
                   help="added to every suite seed (default 0: the suite's own seeds)")
    p.add_argument("--clip", metavar="NAME|PATH",
                   help="contrastive model for FID/KID, CLIP score, R-precision, diversity "
                   "(default: the built-in one if shipped, else those figures are skipped)")
    p.add_argument("--out", metavar="DIR",
                   help="report folder (default: evaluations/<model>-<suite>-n<N>-s<seed>)")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                   help="print two report.json files side by side instead of evaluating")
    _option_flags(p)
    p.add_argument("--per-category", type=int, metavar="K",
                   help="only the first K scenes of each category (a quick look)")
    p.add_argument("--retrieval-n", type=int, default=200, metavar="N",
                   help="scenes per split for a contrastive model's report (default 200)")
    p.add_argument("--batch-size", type=int, default=8, help="images per network batch")
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
    _data_parser(sub)
    _serve_parser(sub)
    _evaluate_parser(sub)
    _sheet_parser(sub)
    _ab_parser(sub)
    info = sub.add_parser("info", help="print the provenance stored in a generated PNG")
    info.add_argument("image", help="a PNG written by gambar")
    return parser


def _version() -> str:
    from gambar import __version__

    return f"gambar {__version__}"


# command -> "module:function" taking the parsed arguments, imported only when that command
# runs (so parsing the command line never imports torch and the models).
COMMANDS: dict[str, str] = {
    "generate": "gambar.commands.generate:run_generate",
    "train": "gambar.commands.train:run_train",
    "serve": "gambar.commands.serve:run_serve",
    "data": "gambar.commands.data:run_data",
    "evaluate": "gambar.commands.evaluate:run_evaluate",
    "sheet": "gambar.commands.sheet:run_sheet",
    "ab": "gambar.commands.ab:run_ab",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A file name from argv may hold bytes that are not UTF-8 (as lone surrogates); echoing it
    # must not fail where stdout is strict UTF-8.
    if callable(getattr(sys.stdout, "reconfigure", None)):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        if args.command in COMMANDS:
            module, function = COMMANDS[args.command].split(":")
            getattr(importlib.import_module(module), function)(args)
        else:  # info
            from gambar.provenance import format_provenance, read_provenance

            print(format_provenance(read_provenance(args.image)))
    except GambarError as exc:
        # One line, even when the message quotes user text that holds line breaks.
        message = str(exc).replace("\r", "\\r").replace("\n", "\\n")
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
