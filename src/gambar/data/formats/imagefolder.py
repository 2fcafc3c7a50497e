"""Hugging Face "imagefolder" with metadata.jsonl (`file_name`, `text`, extras): read and write.

This is also gambar's own on-disk format: every built dataset is a directory of split folders
(`train/`, `validation/`, `test/`), each holding PNGs and a metadata.jsonl, plus a README.md card,
so `datasets.load_dataset("imagefolder", data_dir=OUT)` loads it as `gambar.data.load_dataset` does.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from PIL import Image

from gambar.data.formats import IMAGE_EXTENSIONS, Record, clean_captions, parse_json, read_text
from gambar.errors import CorruptFileError, InvalidInputError
from gambar.fsutil import replace_dir

METADATA_FILES: tuple[str, ...] = ("metadata.jsonl", "metadata.csv")
# Folder names Hugging Face's imagefolder recognises per split; the first is what gambar writes.
SPLIT_DIRS: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing", "eval", "evaluation"),
}
# lets --overwrite recognise a directory it may replace
CARD_MARKER = "built by `gambar data build`"


def split_dirs(root: Path) -> dict[str, Path]:
    """Split -> folder holding its metadata file; a flat folder is one "train" split (as in HF)."""
    if any((root / m).is_file() for m in METADATA_FILES):
        return {"train": root}
    found = {}
    for split, names in SPLIT_DIRS.items():
        for name in names:
            if any((root / name / m).is_file() for m in METADATA_FILES):
                found[split] = root / name
                break
    return found


def is_imagefolder(root: Path) -> bool:
    """Whether `root` is an imagefolder dataset with metadata (flat or with split folders)."""
    return root.is_dir() and bool(split_dirs(root))


def _rows(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, row) for each row of the folder's metadata file; a line that is not UTF-8, not
    JSON or not an object is an error naming it (a broken export, not one bad image)."""
    jsonl, csv_path = folder / METADATA_FILES[0], folder / METADATA_FILES[1]
    if jsonl.is_file():
        rows = []
        # split on "\n" only: JSON strings may hold U+2028 and other breaks splitlines() splits at
        for n, line in enumerate(read_text(jsonl).split("\n"), 1):
            if not line.strip():
                continue
            row = parse_json(line, f"{jsonl}:{n}")
            if not isinstance(row, dict):
                raise CorruptFileError(
                    f"{jsonl}:{n}: expected a JSON object per line, not {type(row).__name__}")
            rows.append((f"{jsonl}:{n}", row))
        return rows
    reader = csv.DictReader(io.StringIO(read_text(csv_path), newline=""))
    try:
        return [(f"{csv_path}:{reader.line_num}", dict(row)) for row in reader]
    except csv.Error as exc:
        raise CorruptFileError(f"{csv_path}:{reader.line_num}: not valid CSV ({exc})") from None


def _captions(row: dict[str, Any], field: str | None) -> list[Any]:
    """The row's captions: `field` if given, else "captions" (a list) if present, else "text"."""
    key = field or ("captions" if "captions" in row else "text")
    value = row.get(key)
    # anything but a list is one caption; clean_captions rejects one that is not a string
    return value if isinstance(value, list) else [value]


def read_split(folder: Path, caption_field: str | None = None,
               root: Path | None = None) -> list[Record]:
    """Records of one split folder; each image must stay inside `root` (default: `folder`), which
    the loader checks with whether it exists."""
    records, listed = [], set()
    for where, row in _rows(folder):
        name = row.get("file_name")
        if name is None or name == "":
            raise InvalidInputError(f"{where}: the row has no 'file_name'")
        if not isinstance(name, str):
            raise InvalidInputError(
                f"{where}: 'file_name' must be a string, not {type(name).__name__}")
        path = folder / name
        captions = clean_captions(_captions(row, caption_field), f"{path} ({where})")
        listed.add(os.path.normpath(name))
        meta = {k: v for k, v in row.items() if k not in ("file_name", "captions")}
        records.append(Record(path, captions, {"file_name": name, **meta},
                              root=folder if root is None else root))
    # An image in the folder that no row names has no caption: an error, never silently unused.
    for path in sorted(folder.rglob("*")):
        rel = os.path.normpath(path.relative_to(folder))
        if path.suffix.lower() in IMAGE_EXTENSIONS and rel not in listed and path.is_file():
            raise InvalidInputError(
                f"{path} has no caption: no row of {folder}'s metadata names it; add a row "
                "with its file_name and text, or move the file out")
    return records


def imagefolder_records(root: Path, split: str = "train",
                        caption_field: str | None = None) -> list[Record]:
    """Records of `split` ("train" | "val" | "test" | "all") of an imagefolder dataset; a file name
    that leaves `root` (`../x.png`, an absolute path, a symlink out) is refused by the loader."""
    found = split_dirs(root)
    if not found:
        raise InvalidInputError(
            f"{root} has no metadata.jsonl (nor train/, validation/, test/ folders with one)")
    if split == "all":
        return [r for s in found for r in read_split(found[s], caption_field, root)]
    if split not in found:
        raise InvalidInputError(
            f"{root} has no {split!r} split; it has: {', '.join(found)} (or use split='all')")
    return read_split(found[split], caption_field, root)


def _png_bytes(image: Image.Image) -> bytes:
    """PNG bytes with no timestamps or other varying chunks: same image, same bytes."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


@dataclass(frozen=True)
class BuildReport:
    """What a build wrote: images and variant groups per split, what was left out, and time."""

    out: Path
    images: dict[str, int]
    groups: dict[str, int]
    seconds: float
    left_out: tuple[str, ...] = ()
    details: dict[str, int] = field(default_factory=dict)  # e.g. images per font

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        total = sum(self.images.values())
        per = ", ".join(f"{s} {self.images.get(s, 0)} ({self.groups.get(s, 0)} groups)"
                        for s in ("train", "val", "test"))
        out = [f"wrote {total} images to {self.out} in {self.seconds:.1f} s: {per}"]
        if self.left_out:
            out.append(f"left out {len(self.left_out)}: {', '.join(self.left_out[:10])}"
                       + (" ..." if len(self.left_out) > 10 else ""))
        out.extend(f"  {name}: {n}" for name, n in self.details.items())
        return out


class ImageFolderWriter:
    """Builds an imagefolder dataset in a hidden sibling folder and moves it to `out` when done.

    A crash or Ctrl-C leaves `out` as it was. Rows are written sorted by file name, images as PNG
    without timestamps, so the same inputs give the same bytes.
    """

    def __init__(self, out: Path, overwrite: bool = False) -> None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise InvalidInputError(f"{out} is a file; give a folder to build the dataset in")
        if out.exists() and any(out.iterdir()):
            if not overwrite:
                raise InvalidInputError(f"{out} already exists and is not empty; "
                                        "choose another folder or pass --overwrite")
            card = out / "README.md"  # bytes: a foreign README need not be UTF-8
            if not (card.is_file() and CARD_MARKER.encode() in card.read_bytes()):
                raise InvalidInputError(
                    f"{out} is not a dataset built by gambar; refusing to replace it")
        self.out = out
        self.tmp = out.parent / f".{out.name}.building-{os.getpid()}"
        try:  # checked before any image is drawn: a bad OUT fails in a second, not at the end
            if self.tmp.exists():
                shutil.rmtree(self.tmp)
            out.parent.mkdir(parents=True, exist_ok=True)
            self.tmp.mkdir()
        except OSError as exc:
            raise InvalidInputError(
                f"cannot create {out} ({exc.strerror or exc}); choose a folder you can write"
            ) from None
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def add(self, split: str, file_name: str, image: Image.Image,
            row: Mapping[str, Any]) -> None:
        """Write one image into `split` and remember its metadata row (file_name first)."""
        folder = self.tmp / SPLIT_DIRS[split][0]
        folder.mkdir(exist_ok=True)
        (folder / file_name).write_bytes(_png_bytes(image))
        self.rows.setdefault(split, []).append({"file_name": file_name, **row})

    def finish(self, card: str) -> Path:
        """Write each split's metadata.jsonl and the card, then move the dataset into place."""
        for split, rows in self.rows.items():
            lines = [json.dumps(r, ensure_ascii=False) for r in
                     sorted(rows, key=lambda r: r["file_name"])]
            (self.tmp / SPLIT_DIRS[split][0] / METADATA_FILES[0]).write_text(
                "\n".join(lines) + "\n", encoding="utf-8")
        (self.tmp / "README.md").write_text(card, encoding="utf-8")
        replace_dir(self.tmp, self.out)
        return self.out

    def __enter__(self) -> ImageFolderWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.tmp.exists():  # finish() moved it unless something went wrong
            shutil.rmtree(self.tmp)


def package_versions(debian: Sequence[str] = (), python: Sequence[str] = ()) -> dict[str, str]:
    """Installed versions of Debian and Python packages, for dataset cards ("unknown" if absent)."""
    import importlib.metadata
    import subprocess

    out = {}
    for name in debian:
        try:
            done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name],
                                  capture_output=True, text=True, check=False)
            out[name] = done.stdout.strip() if done.returncode == 0 else "unknown"
        except OSError:  # not a Debian system
            out[name] = "unknown"
    for name in python:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def card_header(pretty_name: str, license_name: str, languages: Sequence[str], total: int) -> str:
    """Hugging Face dataset-card front matter plus the marker that --overwrite looks for."""
    size = "n<1K" if total < 1000 else "1K<n<10K" if total < 10_000 else "10K<n<100K"
    langs = "".join(f"\n- {lang}" for lang in languages)
    return (f"---\npretty_name: {pretty_name}\nlicense: other\nlicense_name: {license_name}\n"
            f"language:{langs}\ntask_categories:\n- text-to-image\nsize_categories:\n- {size}\n"
            f"---\n\n<!-- {CARD_MARKER}; the same inputs give the same bytes -->\n")
