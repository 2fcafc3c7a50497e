"""What a dataset holds: images and captions per split, caption lengths, bad items, samples."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import torch
from PIL import Image

from gambar.data.formats import printable
from gambar.data.loading import (
    BUILTIN,
    CaptionedImages,
    WebDataset,
    load_dataset,
    parse_spec,
)
from gambar.errors import GambarError, InvalidInputError
from gambar.imaging import make_grid

# Upper ends of the caption-length bins, in words (the last bin is open).
LENGTH_BINS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30)
GRID_IMAGES = 32
GRID_COLUMNS = 8
log = logging.getLogger("gambar.data")


@dataclass
class SplitInfo:
    """Counts of one split."""

    images: int = 0
    captions: int = 0
    words: Counter[int] = field(default_factory=Counter)  # caption length in words -> count
    skipped: list[tuple[str, str]] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)


@dataclass
class DatasetInfo:
    """Counts per split of one dataset spec, and the datasets counted (for a sample grid)."""

    spec: str
    kind: str
    splits: dict[str, SplitInfo]
    datasets: dict[str, CaptionedImages | WebDataset] = field(default_factory=dict, repr=False)


def available_splits(spec: str | Path) -> list[str]:
    """The splits a dataset has, without loading it."""
    kind, target = parse_spec(spec)
    path = Path(target)
    if kind in BUILTIN:
        return ["train", "val", "test"]
    if kind == "imagefolder":
        from gambar.data.formats.imagefolder import split_dirs

        return list(split_dirs(path))
    if kind == "coco":
        from gambar.data.formats.coco import find_annotations

        if path.is_file():
            return ["all"]
        found = []
        for split in ("train", "val"):
            try:
                find_annotations(path, split)
                found.append(split)
            except InvalidInputError:
                pass
        return found
    if kind == "cub":
        from gambar.data.formats.cub import SPLIT_FILES

        return [s for s, names in SPLIT_FILES.items() if any((path / n).is_file() for n in names)]
    from gambar.data.formats.webdataset import find_shards

    found = []
    for split in ("train", "val", "test"):
        try:
            find_shards(target, split)
            found.append(split)
        except InvalidInputError:
            pass
        if not path.is_dir():
            break  # a pattern is one split
    return found


def _count(dataset: CaptionedImages | WebDataset, info: SplitInfo) -> None:
    if isinstance(dataset, WebDataset):
        for _, _, meta in dataset:
            _add(info, meta["captions"])
        info.skipped = list(dataset.skipped)
        return
    for record in dataset.records:
        _add(info, record.captions)
    info.skipped = list(dataset.skipped)


def _add(info: SplitInfo, captions: Sequence[str]) -> None:
    info.images += 1
    info.captions += len(captions)
    info.words.update(len(c.split()) for c in captions)
    if len(info.examples) < 3:
        info.examples.append(captions[0])


def dataset_info(spec: str | Path, splits: Sequence[str] | None = None,
                 verify: bool = True, size: int = 64) -> DatasetInfo:
    """Counts of each split (default: every split the dataset has); images `size` pixels square.

    Each split is loaded once, so its skipped items are reported once.
    """
    kind, _ = parse_spec(spec)
    chosen = list(splits) if splits else available_splits(spec)
    if not chosen:
        raise InvalidInputError(f"{spec} has no splits with data")
    out, datasets = {}, {}
    for split in chosen:
        info = SplitInfo()
        datasets[split] = load_dataset(spec, size=size, split=split, verify=verify)
        _count(datasets[split], info)
        out[split] = info
    return DatasetInfo(str(spec), kind, out, datasets)


def length_histogram(words: Counter[int]) -> list[tuple[str, int]]:
    """(bin label, count) over LENGTH_BINS: "1", "2", ..., "7-8", ..., "31+"."""
    rows, low = [], 1
    for high in LENGTH_BINS:
        label = str(high) if high == low else f"{low}-{high}"
        rows.append((label, sum(n for w, n in words.items() if low <= w <= high)))
        low = high + 1
    rows.append((f"{low}+", sum(n for w, n in words.items() if w >= low)))
    while rows and rows[-1][1] == 0:
        rows.pop()
    return rows


def format_info(info: DatasetInfo, width: int = 40) -> str:
    """A plain-text report: per split counts, caption-length histogram, examples, bad items."""
    lines = [f"{info.spec} ({info.kind})"]
    total = SplitInfo()
    for split, s in info.splits.items():
        per = s.captions / s.images if s.images else 0.0
        lines.append(f"  {split:5s} {s.images:7d} images {s.captions:8d} captions "
                     f"({per:.1f} per image)" + (f", {len(s.skipped)} skipped" if s.skipped
                                                 else ""))
        total.words.update(s.words)
        total.skipped.extend(s.skipped)
        total.examples.extend(s.examples)
    lines.append("caption length (words):")
    hist = length_histogram(total.words)
    peak = max((n for _, n in hist), default=0) or 1
    for label, n in hist:
        lines.append(f"  {label:>6s} {n:8d} " + "#" * round(width * n / peak))
    lines.append("examples: " + " | ".join(printable(e) for e in total.examples[:5]))
    for where, reason in total.skipped[:10]:
        lines.append(f"skipped {where}: {reason}")
    if len(total.skipped) > 10:
        lines.append(f"... and {len(total.skipped) - 10} more skipped")
    return "\n".join(lines)


def sample_grid(dataset: CaptionedImages | WebDataset, n: int = GRID_IMAGES,
                cols: int = GRID_COLUMNS) -> Image.Image:
    """A grid of up to n images spread evenly over the dataset (the first n of a stream); images
    that fail to load (possible when they were not verified) are left out, as a stream does."""
    if isinstance(dataset, WebDataset):
        images = [_to_pil(x) for x, _, _ in islice(iter(dataset), n)]
    else:
        count = len(dataset)
        picks = sorted({round(i * (count - 1) / max(n - 1, 1)) for i in range(min(n, count))})
        images = []
        for i in picks:
            try:
                images.append(dataset.image(i))
            except GambarError as exc:
                log.warning("sample grid: left out %s", exc)
    if not images:
        raise InvalidInputError("the dataset has no images to show")
    return make_grid(images, cols=min(cols, len(images)))


def _to_pil(x: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] -> RGB image."""
    array = ((x.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(array)
