"""Readers of standard (caption, image) formats: imagefolder, COCO, CUB/Flowers, webdataset.

Every reader turns its format into `Record`s (an image, its captions, its metadata) and reports
bad data the same way: a missing or unreadable image is logged with its path, skipped, and counted
in one `SkippedItemsWarning` at the end; an image without any caption is an error that names it.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from gambar.errors import CorruptFileError, InvalidInputError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
log = logging.getLogger("gambar.data")


class SkippedItemsWarning(UserWarning):
    """Some images were missing or unreadable and were skipped (one summary per pass)."""


@dataclass(frozen=True)
class Record:
    """One image (a file, or a function that draws it) with its captions and metadata."""

    image: Path | Callable[[], Image.Image]
    captions: tuple[str, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """What a message should name: the file, or the item's name for drawn images."""
        if isinstance(self.image, Path):
            return str(self.image)
        return str(self.metadata.get("name", self.metadata.get("file_name", "a drawn image")))


@dataclass
class BadItems:
    """Skipped items of one source: each logged when found, all counted in one warning."""

    source: str
    items: list[tuple[str, str]] = field(default_factory=list)  # (where, reason)

    def add(self, where: str, reason: str) -> None:
        """Record (and log) one skipped item; `reason` starts with "missing" or "unreadable"."""
        log.warning("%s: skipped %s (%s)", self.source, where, reason)
        self.items.append((where, reason))

    def __len__(self) -> int:
        return len(self.items)

    def summary(self, total: int) -> str:
        """One line: how many of `total` were skipped and why, with the first example."""
        kinds = Counter(reason.split(":")[0].split(" ")[0] for _, reason in self.items)
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        where, reason = self.items[0]
        return (f"{self.source}: skipped {len(self.items)} of {total} images ({counts}); "
                f"first: {where} ({reason})")

    def warn(self, total: int) -> None:
        """Emit the summary as a SkippedItemsWarning, if anything was skipped."""
        if self.items:
            warnings.warn(self.summary(total), SkippedItemsWarning, stacklevel=3)


def clean_captions(captions: Iterable[Any], where: str) -> tuple[str, ...]:
    """Stripped, non-empty captions; an image with none is an error that names it."""
    out = tuple(str(c).strip() for c in captions if c is not None and str(c).strip())
    if not out:
        raise InvalidInputError(f"{where} has no caption; every image needs at least one")
    return out


def decode_image(source: Path | bytes, where: str) -> Image.Image:
    """Fully decoded image from a file or bytes; CorruptFileError (naming `where`) if unreadable."""
    try:
        with Image.open(source if isinstance(source, Path) else io.BytesIO(source)) as im:
            im.load()  # decode now: a truncated file only fails here, not in open()
            return im.copy()
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise CorruptFileError(f"{where}: unreadable image ({exc})") from None


def load_record_image(record: Record) -> Image.Image:
    """The record's image, decoded (drawn, for drawn records)."""
    if isinstance(record.image, Path):
        return decode_image(record.image, str(record.image))
    return record.image()


def check_files(records: list[Record], bad: BadItems, verify: bool) -> list[Record]:
    """Records whose image file exists (and, with `verify`, decodes); the rest go to `bad`."""
    kept = []
    for r in records:
        if isinstance(r.image, Path):
            if not r.image.is_file():
                bad.add(str(r.image), "missing file")
                continue
            if verify:
                try:
                    decode_image(r.image, str(r.image))
                except CorruptFileError as exc:
                    bad.add(str(r.image), f"unreadable: {str(exc).split(': ', 1)[-1]}")
                    continue
        kept.append(r)
    return kept
