"""Readers of standard (caption, image) formats: imagefolder, COCO, CUB/Flowers, webdataset.

Every reader turns its format into `Record`s (an image, its captions, its metadata) and reports
bad data the same way: an image that is missing, unreadable, over the pixel cap, or outside the
dataset's folder (`../x.png`, an absolute path, a symlink that leads out) is logged with its path,
skipped, and counted in one `SkippedItemsWarning` at the end; an image without any caption, or a
metadata file that is not UTF-8 or not valid JSON, is an error that names the file and line.
"""

from __future__ import annotations

import codecs
import json
import logging
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from gambar.errors import CorruptFileError, GambarError, InvalidInputError
from gambar.imaging import ImageTooLargeError, open_image

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
log = logging.getLogger("gambar.data")


class SkippedItemsWarning(UserWarning):
    """Some images were missing, unreadable, too large or outside the dataset and were skipped."""


class OutsideDatasetError(InvalidInputError):
    """A dataset names a file that resolves outside its folder (`../x`, `/abs`, a symlink out)."""


@dataclass(frozen=True)
class Record:
    """One image (a file, or a function that draws it) with its captions and metadata.

    A file is only read if it resolves (symlinks followed) inside `root`, the folder the dataset's
    own file names are relative to; None (drawn images, files a user named) checks nothing.
    """

    image: Path | Callable[[], Image.Image]
    captions: tuple[str, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    root: Path | None = None

    @property
    def where(self) -> str:
        """What a message should name: the file, or the item's name for drawn images."""
        if isinstance(self.image, Path):
            return str(self.image)
        return str(self.metadata.get("name", self.metadata.get("file_name", "a drawn image")))


def printable(text: str) -> str:
    """`text` with newlines and other unprintable characters escaped, so that a file name from a
    dataset (which may hold any of them) keeps a report line one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass
class BadItems:
    """Skipped items of one source: each logged when found, all counted in one warning."""

    source: str
    items: list[tuple[str, str]] = field(default_factory=list)  # (where, reason)

    def add(self, where: str, reason: str) -> None:
        """Record (and log) one skipped item; `reason` starts with its kind, one word: "missing",
        "unreadable", "oversized" or "outside"."""
        where, reason = printable(where), printable(reason)
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
    """Stripped, non-empty captions; an image with none, or a caption that is not a string (a
    number, a list, an object in the metadata), is an error that names it."""
    out = []
    for c in captions:
        if c is None:
            continue
        if not isinstance(c, str):
            raise InvalidInputError(
                f"{where}: a caption must be a string, not {type(c).__name__} ({str(c)[:40]})")
        if c.strip():
            out.append(c.strip())
    if not out:
        raise InvalidInputError(f"{where} has no caption; every image needs at least one")
    return tuple(out)


def read_text(path: Path) -> str:
    """A dataset's text file (metadata, captions, class lists) as UTF-8, a leading BOM dropped.

    Not UTF-8 is an error naming the line of the first bad byte rather than a guess at Latin-1:
    a guess would turn every accented caption into mojibake, and skipping those lines would
    quietly drop exactly the non-English captions.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise CorruptFileError(
            f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None


def parse_json(text: str | bytes, where: str) -> Any:
    """json.loads with a one-line error naming `where` (also for nesting too deep to parse)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{where}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    except UnicodeDecodeError:
        raise CorruptFileError(f"{where}: not valid JSON (not UTF-8)") from None
    except RecursionError:
        raise CorruptFileError(f"{where}: not valid JSON (nested too deeply)") from None


def inside(path: Path, root: Path | None) -> Path:
    """`path` with symlinks resolved; OutsideDatasetError if it leaves `root` (None: no check),
    CorruptFileError if it cannot be resolved (a symlink loop, a NUL in the name)."""
    if root is None:
        return path
    try:
        resolved, top = path.resolve(), root.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # RuntimeError: a symlink loop
        raise CorruptFileError(f"{path}: unreadable path ({exc})") from None
    if not resolved.is_relative_to(top):
        raise OutsideDatasetError(
            f"{path}: resolves to {resolved}, outside the dataset folder {root}")
    return resolved


def load_record_image(record: Record) -> Image.Image:
    """The record's image, decoded (drawn, for drawn records); a GambarError if it is outside the
    dataset, over the pixel cap or unreadable."""
    if isinstance(record.image, Path):
        return open_image(inside(record.image, record.root), str(record.image))
    return record.image()


def skip_reason(exc: GambarError, where: str) -> str:
    """The reason BadItems records for an image refused with `exc`: its kind, then the detail."""
    kind = ("outside" if isinstance(exc, OutsideDatasetError) else
            "oversized" if isinstance(exc, ImageTooLargeError) else "unreadable")
    detail = str(exc).removeprefix(f"{where}: ").removeprefix(kind).lstrip()
    return f"{kind}: {detail}"


def check_files(records: list[Record], bad: BadItems, verify: bool) -> list[Record]:
    """Records whose image file is inside the dataset, exists and (with `verify`) decodes within
    the pixel cap; the rest go to `bad`."""
    kept = []
    for r in records:
        if isinstance(r.image, Path):
            where = str(r.image)
            try:
                path = inside(r.image, r.root)
                if not path.is_file():
                    bad.add(where, "missing file")
                    continue
                if verify:
                    open_image(path, where)
            except (OutsideDatasetError, ImageTooLargeError, CorruptFileError) as exc:
                bad.add(where, skip_reason(exc, where))
                continue
            except OSError as exc:  # is_file() on a name too long for the file system
                bad.add(where, f"unreadable: path ({exc.strerror})")
                continue
        kept.append(r)
    return kept
