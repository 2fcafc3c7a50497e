"""`gambar data build emoji|glyphs OUT/` and `gambar data info PATH`."""

from __future__ import annotations

import argparse
import io
import os
import sys
import warnings
from pathlib import Path

from gambar.errors import InvalidInputError
from gambar.fsutil import check_writable

GRID_NAME_CHARS = 64  # of the dataset's name in the default grid file name (names max 255 bytes)


def run_data(args: argparse.Namespace) -> Path | None:
    """Build a dataset or report on one; returns the folder built or the grid written."""
    # Skipped-item summaries are for a person here: one "warning:" line, not a Python warning.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return run_build(args) if args.data_command == "build" else run_info(args)
        finally:
            for w in caught:
                print(f"warning: {w.message}", file=sys.stderr)


def run_build(args: argparse.Namespace) -> Path:
    """Render the emoji or glyph dataset into args.out."""
    if args.limit is not None and args.limit < 1:
        raise InvalidInputError(f"--limit must be at least 1, not {args.limit}")
    options = {"size": args.size, "background": args.background, "limit": args.limit,
               "overwrite": args.overwrite}
    if args.source == "emoji":
        from gambar.data.emoji import build_emoji

        report = build_emoji(Path(args.out), **options)
    else:
        from gambar.data.glyphs import build_glyphs

        report = build_glyphs(Path(args.out), **options)
    for line in report.lines():
        print(line)
    return report.out


def _check_grid_path(path: Path) -> Path:
    """A .png path that can be written, checked before any image is read."""
    if path.suffix.lower() != ".png":
        raise InvalidInputError(f"--grid must be a .png file, not {path}")
    check_writable(path)
    return path


def run_info(args: argparse.Namespace) -> Path:
    """Print counts and a caption-length histogram; write a sample grid PNG."""
    from gambar.data.info import dataset_info, format_info, sample_grid
    from gambar.data.loading import check_image_size, parse_spec
    from gambar.fsutil import atomic_write_bytes

    check_image_size(args.size)
    kind, target = parse_spec(args.path)  # a path that is no dataset is the first thing to say
    name = Path(target.rstrip("/")).name[:GRID_NAME_CHARS]
    while len(os.fsencode(name)) > 2 * GRID_NAME_CHARS:  # names are capped in bytes, not chars
        name = name[:-1]
    name = name or kind
    grid_path = _check_grid_path(Path(args.grid) if args.grid else Path(f"{name}-samples.png"))
    info = dataset_info(args.path, [args.split] if args.split else None,
                        verify=not args.no_verify, size=args.size)
    print(format_info(info))
    first = next(iter(info.splits))
    buf = io.BytesIO()
    sample_grid(info.datasets[first]).save(buf, format="PNG")
    try:
        grid_path.parent.mkdir(parents=True, exist_ok=True)  # as `generate -o` does
        atomic_write_bytes(grid_path, buf.getvalue())
    except OSError as exc:
        raise InvalidInputError(f"cannot write the grid to {grid_path} ({exc.strerror or exc})"
                                ) from None
    print(f"sample grid ({first}): {grid_path}")
    return grid_path
