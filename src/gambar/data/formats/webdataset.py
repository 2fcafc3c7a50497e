"""webdataset tar shards (Aizman et al. 2019): `<key>.jpg|png|webp` + `<key>.txt`, streamed.

Shards are read front to back in tar stream mode (no seeking, no extraction), so data larger than
memory or disk cache trains at the speed of sequential reads. Files that share a key (the path up to
the first dot of the file name, as in the webdataset library) form one sample. A `.txt` holds one
caption a line; a `.json` may hold "text", "caption" or "captions" and is passed on as metadata.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gambar.data.formats import (
    BadItems,
    OutsideDatasetError,
    clean_captions,
    inside,
    parse_json,
    skip_reason,
)
from gambar.errors import CorruptFileError, InvalidInputError
from gambar.imaging import ImageTooLargeError, open_image

IMAGE_KEYS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
# A member is read whole into memory: 256 MB holds any image within the pixel cap (8192^2 RGB is
# 201 MB even uncompressed) and stops a crafted multi-gigabyte member.
MAX_MEMBER_BYTES = 256 * 2**20
CAPTION_KEYS: tuple[str, ...] = ("txt", "caption", "text")
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_shards(pattern: str) -> list[Path]:
    """Shard paths of "data/train-{000..009}.tar" (braces, zero-padded) or a glob "data/*.tar"."""
    match = _BRACES.search(pattern)
    if match:
        lo, hi = match.group(1), match.group(2)
        width = len(lo) if lo.startswith("0") else 0
        names = [pattern[: match.start()] + str(i).zfill(width) + pattern[match.end():]
                 for i in range(int(lo), int(hi) + 1)]
        return [p for name in names for p in expand_shards(name)]
    path = Path(pattern)
    if any(c in pattern for c in "*?["):
        return sorted(path.parent.glob(path.name))
    return [path]


def find_shards(spec: str | Path, split: str) -> list[Path]:
    """Shards of `split`: a pattern as given, or in a folder `<split>/*.tar`, `<split>*.tar`, or
    (for "train" only, when no shard names a split) every `*.tar`."""
    try:
        return _find_shards(spec, split)
    except OSError as exc:  # a name too long for the file system
        raise InvalidInputError(f"cannot read {spec}: {exc.strerror}") from None


def _find_shards(spec: str | Path, split: str) -> list[Path]:
    path = Path(spec)
    if path.is_dir():
        shards = sorted((path / split).glob("*.tar")) or sorted(path.glob(f"{split}*.tar"))
        if not shards and split == "train":
            named = [p for p in path.glob("*.tar") if p.name.startswith(("val", "test"))]
            shards = [] if named else sorted(path.glob("*.tar"))
        if not shards:
            raise InvalidInputError(f"no tar shards for split {split!r} in {path}")
        return shards
    shards = expand_shards(str(spec))
    missing = [p for p in shards if not p.is_file()]
    if not shards or missing:
        raise InvalidInputError(f"no shard file {missing[0] if missing else spec}")
    return shards


def shard_root(spec: str | Path) -> Path | None:
    """The folder shards found by listing must stay inside (a symlink out is refused): the folder
    given, or the folder of a glob; None for shards the user named one by one."""
    path = Path(spec)
    if path.is_dir():
        return path
    if any(c in str(spec) for c in "*?["):
        parts = path.parts
        fixed = next(i for i, part in enumerate(parts) if any(c in part for c in "*?[{"))
        return Path(*parts[:fixed]) if fixed else Path()
    return None


def is_webdataset(path: Path) -> bool:
    """Whether `path` is a tar shard or a folder of them."""
    return path.suffix == ".tar" or (path.is_dir() and any(path.rglob("*.tar")))


def _split_name(name: str) -> tuple[str, str]:
    """"dir/abc.seg.jpg" -> ("dir/abc", "seg.jpg"): key and extension, webdataset's rule."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def iter_samples(shard: Path) -> Iterator[tuple[str, dict[str, bytes | None]]]:
    """(key, {extension: bytes}) for each sample of one shard, in file order; a member over
    MAX_MEMBER_BYTES is not read and maps to None."""
    key, files = None, {}
    with tarfile.open(shard, "r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            k, ext = _split_name(member.name)
            if not ext or k.rpartition("/")[2].startswith((".", "_")):
                continue  # hidden or housekeeping files (e.g. __index__) are no samples
            if k != key and key is not None:
                yield key, files
                files = {}
            key = k
            if member.size > MAX_MEMBER_BYTES:
                files[ext] = None
                continue
            handle = tar.extractfile(member)
            files[ext] = handle.read() if handle is not None else b""
    if key is not None:
        yield key, files


def _captions(files: dict[str, bytes], where: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Captions (from .txt, or a .json's text/caption/captions) and the .json as metadata."""
    meta: dict[str, Any] = {}
    if "json" in files:
        meta = parse_json(files["json"], f"{where}.json")
        meta = meta if isinstance(meta, dict) else {"json": meta}
    for ext in CAPTION_KEYS:
        if ext in files:
            text = files[ext].decode("utf-8", errors="replace")
            return clean_captions(text.splitlines(), f"{where}.{ext}"), meta
    found = meta.get("captions", meta.get("text", meta.get("caption")))
    # anything but a list is one caption; clean_captions rejects one that is not a string
    return clean_captions(found if isinstance(found, list) else [found],
                          f"{where} (it has no .txt)"), meta


class WebDataset(torch.utils.data.IterableDataset):
    """Streams (image (3, S, S) in [-1, 1], caption, metadata) from tar shards.

    Each DataLoader worker reads its own shards (shard i goes to worker i mod W). The caption of a
    sample with several, and the shard order when `shuffle_shards`, come from (seed, epoch), so a
    pass is reproducible; call `set_epoch` between passes. `exclude(captions)` drops samples (the
    held-out filter of `gambar.data.mix`), counted in `excluded`. A shard that resolves outside
    `root` (a symlink out of the folder listed), an image over the pixel cap and an unreadable one
    are skipped and counted in `skipped`.
    """

    def __init__(self, shards: Sequence[Path], size: int = 64, *, seed: int = 0,
                 shuffle_shards: bool = False,
                 exclude: Callable[[Sequence[str]], bool] | None = None,
                 root: Path | None = None) -> None:
        from gambar.data.loading import check_image_size

        if not shards:
            raise InvalidInputError("no shards given")
        self.shards, self.size, self.seed = list(shards), check_image_size(size), seed
        self.root = root
        self.shuffle_shards, self.exclude = shuffle_shards, exclude
        self.epoch = 0
        self.skipped: list[tuple[str, str]] = []
        self.excluded = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the caption choices (and shard order) of pass `epoch`."""
        self.epoch = epoch

    def _order(self) -> list[int]:
        order = list(range(len(self.shards)))
        if self.shuffle_shards:
            order = [int(i) for i in np.random.default_rng([self.seed, self.epoch]).permutation(
                len(order))]
        info = torch.utils.data.get_worker_info()
        return order if info is None else order[info.id :: info.num_workers]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, str, dict[str, Any]]]:
        from gambar.data.loading import choose_caption, square_image, to_tensor

        bad, total = BadItems("webdataset"), 0
        self.excluded = 0
        for shard_no in self._order():
            shard = self.shards[shard_no]
            position = -1
            try:
                inside(shard, self.root)
            except (OutsideDatasetError, CorruptFileError) as exc:
                bad.add(str(shard), skip_reason(exc, str(shard)))
                continue
            try:
                for position, (key, files) in enumerate(iter_samples(shard)):
                    total += 1
                    where = f"{shard}:{key}"
                    big = [ext for ext, data in files.items() if data is None]
                    if big:
                        bad.add(where, f"oversized: its .{big[0]} is over {MAX_MEMBER_BYTES} bytes")
                        continue
                    captions, meta = _captions(files, where)
                    if self.exclude is not None and self.exclude(captions):
                        self.excluded += 1
                        continue
                    ext = next((e for e in IMAGE_KEYS if e in files), None)
                    if ext is None:
                        bad.add(where, "missing image: no .jpg/.png/.webp with this key")
                        continue
                    try:
                        image = open_image(files[ext], f"{where}.{ext}")
                    except (ImageTooLargeError, CorruptFileError) as exc:
                        bad.add(f"{where}.{ext}", skip_reason(exc, f"{where}.{ext}"))
                        continue
                    caption = choose_caption(captions, self.seed, self.epoch, shard_no, position)
                    yield (to_tensor(square_image(image, self.size)), caption,
                           {**meta, "key": key, "shard": str(shard), "captions": list(captions)})
            except (tarfile.TarError, OSError, EOFError) as exc:
                # A truncated or damaged shard: what was read stands, the rest is reported.
                bad.add(str(shard), f"unreadable shard after {position + 1} samples: {exc}")
        self.skipped = bad.items
        bad.warn(total)
