"""One entry point for paired (image, caption) data: `load_dataset(spec, size, split)`.

A spec names a built-in source ("emoji", "glyphs", drawn on the fly), a folder or file in a standard
format (detected: imagefolder with metadata.jsonl, COCO captions, CUB/Flowers of Reed et al.,
webdataset shards), or says the format: "coco:PATH", "cub:PATH", "imagefolder:PATH",
"webdataset:PATTERN". Every dataset yields (image (3, S, S) in [-1, 1], caption, metadata).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gambar.data.formats import BadItems, Record, check_files, load_record_image
from gambar.data.formats.webdataset import WebDataset
from gambar.data.shapes_vocab import BACKGROUND
from gambar.errors import InvalidInputError
from gambar.tensors import to_tensor

__all__ = ["CaptionedImages", "WebDataset", "check_image_size", "choose_caption", "load_dataset",
           "square_image", "to_tensor"]

SPLITS: tuple[str, ...] = ("train", "val", "test", "all")
SPLIT_ALIASES: dict[str, str] = {"validation": "val", "valid": "val", "dev": "val"}
FORMATS: tuple[str, ...] = ("imagefolder", "coco", "cub", "webdataset")
BUILTIN: tuple[str, ...] = ("emoji", "glyphs")
# Image side a loader squares to. 512 is what the dataset builders draw at most; a batch of 32
# images at 30000 pixels took 10.8 GB and a minute for one `data info` grid.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 512


def check_image_size(size: object) -> int:
    """`size` if it is an integer from MIN_IMAGE_SIZE to MAX_IMAGE_SIZE, else a one-line error."""
    if type(size) is not int or not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise InvalidInputError(f"image size must be an integer from {MIN_IMAGE_SIZE} to "
                                f"{MAX_IMAGE_SIZE}, not {size!r}")
    return size


def square_image(image: Image.Image, size: int) -> Image.Image:
    """Any image -> RGB size x size: transparency onto white, shorter side to `size`, centre crop.

    White, because every gambar domain draws on white (shapes spec) and the judge reads white as
    background. Pillow's bicubic resize is antialiased (its kernel widens with the scale factor).
    """
    if image.mode in ("P", "LA", "PA") or (image.mode == "RGB" and "transparency" in image.info):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        canvas = Image.new("RGBA", image.size, (*BACKGROUND, 255))
        image = Image.alpha_composite(canvas, image)
    image = image.convert("RGB")
    w, h = image.size
    if (w, h) == (size, size):
        return image
    scale = size / min(w, h)
    rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((rw, rh), Image.Resampling.BICUBIC)
    left, top = (rw - size) // 2, (rh - size) // 2
    return image.crop((left, top, left + size, top + size))


def choose_caption(captions: Sequence[str], seed: int, epoch: int, *index: int) -> str:
    """The caption of an item in one epoch: a function of (seed, epoch, index) only.

    A pure function (not a shared RNG) so that a resumed run, or another worker, picks the same.
    """
    if len(captions) == 1:
        return captions[0]
    rng = np.random.default_rng([seed, epoch, *index])
    return captions[int(rng.integers(len(captions)))]


class CaptionedImages(torch.utils.data.Dataset):
    """Map-style dataset of (image (3, S, S) in [-1, 1], caption, metadata) over `Record`s.

    An image with several captions gets one per epoch, chosen by `choose_caption(seed, epoch,
    index)`; call `set_epoch` each epoch (or use `item(index, epoch)`). metadata holds the record's
    fields plus "captions" (all of them) and "source".
    """

    def __init__(self, records: Sequence[Record], size: int = 64, *, seed: int = 0,
                 name: str = "", skipped: Sequence[tuple[str, str]] = ()) -> None:
        check_image_size(size)
        if seed < 0:
            raise InvalidInputError(f"seed must be >= 0, got {seed}")
        self.records, self.size, self.seed, self.name = list(records), size, seed, name
        self.skipped = list(skipped)  # (where, reason) of images left out when loading
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch `epoch`'s caption choices from now on."""
        self.epoch = epoch

    def image(self, index: int) -> Image.Image:
        """The RGB size x size image of item `index`."""
        return square_image(load_record_image(self.records[index]), self.size)

    def caption(self, index: int, epoch: int | None = None) -> str:
        """Item `index`'s caption in `epoch` (default: the current epoch)."""
        epoch = self.epoch if epoch is None else epoch
        return choose_caption(self.records[index].captions, self.seed, epoch, index)

    def item(self, index: int, epoch: int) -> tuple[torch.Tensor, str, dict[str, Any]]:
        """Item `index` as it is in `epoch`."""
        if not 0 <= index < len(self.records):
            raise IndexError(f"index {index} out of range for {len(self.records)} images")
        record = self.records[index]
        meta = {**record.metadata, "captions": list(record.captions), "source": self.name}
        return to_tensor(self.image(index)), self.caption(index, epoch), meta

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, dict[str, Any]]:
        return self.item(index, self.epoch)

    def subset(self, keep: Callable[[Record], bool]) -> CaptionedImages:
        """A dataset of the records for which `keep(record)` holds (same size, seed, name)."""
        out = CaptionedImages([r for r in self.records if keep(r)], self.size, seed=self.seed,
                              name=self.name, skipped=self.skipped)
        out.epoch = self.epoch
        return out

    @staticmethod
    def collate(batch: Sequence[tuple[torch.Tensor, str, dict[str, Any]]]
                ) -> tuple[torch.Tensor, list[str], list[dict[str, Any]]]:
        """(B, 3, S, S) images, B captions, B metadata dicts."""
        images, captions, meta = zip(*batch, strict=True)
        return torch.stack(images), list(captions), list(meta)


def _split(split: str) -> str:
    split = SPLIT_ALIASES.get(split, split)
    if split not in SPLITS:
        raise InvalidInputError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    return split


def _stat(path: Path) -> tuple[bool, bool]:
    """(exists, is a file); a name the file system refuses (too long) is a one-line error."""
    try:
        return path.exists(), path.is_file()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror}") from None


def detect_format(path: Path) -> str:
    """The format of a folder or file on disk (see the module docstring)."""
    from gambar.data.formats.coco import find_annotations
    from gambar.data.formats.cub import is_cub
    from gambar.data.formats.imagefolder import is_imagefolder
    from gambar.data.formats.webdataset import is_webdataset

    exists, is_file = _stat(path)
    if not exists and not any(c in str(path) for c in "*?{"):
        raise InvalidInputError(f"{path} does not exist")
    if is_file and path.suffix.lower() not in (".json", ".tar"):
        raise InvalidInputError(
            f"{path} is a file, not a dataset: give a dataset folder, a COCO captions .json or a "
            "webdataset .tar shard (or name the format, e.g. coco:PATH)")
    if path.suffix == ".json" or (path.is_dir() and (path / "annotations").is_dir()):
        return "coco"
    if is_cub(path):
        return "cub"
    if is_imagefolder(path):
        return "imagefolder"
    if is_webdataset(path) or any(c in str(path) for c in "*?{"):
        return "webdataset"
    try:
        find_annotations(path, "train")
        return "coco"
    except InvalidInputError:
        pass
    raise InvalidInputError(
        f"cannot tell the format of {path}: expected metadata.jsonl (imagefolder), "
        "annotations/captions_*.json (COCO), text_c10/ (CUB/Flowers) or *.tar shards; "
        "or name it, e.g. coco:PATH")


def parse_spec(spec: str | Path) -> tuple[str, str]:
    """(kind, target): ("emoji", ""), ("coco", "data/coco"), ... for a dataset spec."""
    text = str(spec)
    if text in BUILTIN:
        return text, ""
    head, sep, rest = text.partition(":")
    if sep and head in FORMATS + BUILTIN:
        exists = _stat(Path(rest))[0] if head in FORMATS else True
        if not exists and head != "webdataset":  # a webdataset spec may be a glob
            raise InvalidInputError(f"{rest} does not exist")
        return head, rest
    return detect_format(Path(text)), text


def load_dataset(spec: str | Path, size: int = 64, split: str = "train", *, seed: int = 0,
                 verify: bool = True, limit: int | None = None,
                 **options: Any) -> CaptionedImages | WebDataset:
    """The (image, caption, metadata) dataset that `spec` names; see the module docstring.

    split: "train" | "val" | "test" | "all". verify: decode every image now, so that a corrupt one
    is reported and skipped here rather than failing mid-training (missing files are always
    checked). limit: keep the first N records (tests, quick looks). options go to the source:
    image_dir= (coco, cub), caption_field= (imagefolder), languages=/background= (emoji, glyphs),
    shuffle_shards= (webdataset). Bad images are logged one by one and summarised in one
    SkippedItemsWarning, as are files that resolve outside the dataset's folder and images over
    `gambar.imaging.MAX_IMAGE_PIXELS`; an image without a caption raises InvalidInputError
    naming it.
    """
    split = _split(split)
    check_image_size(size)
    if limit is not None and (type(limit) is not int or limit < 1):
        raise InvalidInputError(f"limit must be a whole number of at least 1, not {limit!r}")
    kind, target = parse_spec(spec)
    if kind == "webdataset":
        from gambar.data.formats.webdataset import find_shards, shard_root

        if limit is not None:
            raise InvalidInputError("limit= does not apply to streamed webdataset shards")
        return WebDataset(find_shards(target, split), size, seed=seed, root=shard_root(target),
                          **options)
    bad = BadItems(f"{kind} {target}".strip())
    records = _records(kind, Path(target), split, size, options, bad)
    if limit is not None:
        records = records[:limit]
    records = check_files(records, bad, verify)
    bad.warn(len(records) + len(bad))
    return CaptionedImages(records, size, seed=seed, name=kind, skipped=bad.items)


def _records(kind: str, path: Path, split: str, size: int,
             options: dict[str, Any], bad: BadItems) -> list[Record]:
    if kind == "emoji":
        from gambar.data.emoji import emoji_records

        return emoji_records(split, size, **options)
    if kind == "glyphs":
        from gambar.data.glyphs import glyph_records

        return glyph_records(split, size, **options)
    if kind == "imagefolder":
        from gambar.data.formats.imagefolder import imagefolder_records

        return imagefolder_records(path, split, **options)
    if kind == "coco":
        from gambar.data.formats.coco import coco_records

        if split == "all":
            return [r for s in ("train", "val") for r in coco_records(path, s, **options)]
        return coco_records(path, split, **options)
    from gambar.data.formats.cub import cub_records

    return cub_records(path, split, bad=bad, **options)
