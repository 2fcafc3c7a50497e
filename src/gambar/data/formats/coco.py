"""COCO captions (Chen et al. 2015): `annotations/captions_<split><year>.json` + an image folder.

The JSON has "images" ({id, file_name, ...}) and "annotations" ({image_id, id, caption}); each image
has about five captions. Layout found under a root folder (the official download unpacked):
`annotations/captions_train2014.json` with images in `train2014/` (2017 likewise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gambar.data.formats import Record, clean_captions, parse_json, read_text
from gambar.errors import CorruptFileError, InvalidInputError

# gambar split -> the word COCO uses in file and folder names
COCO_SPLITS: dict[str, str] = {"train": "train", "val": "val"}
YEARS: tuple[str, ...] = ("2014", "2017")


def find_annotations(root: Path, split: str) -> Path:
    """The captions JSON of `split` under `root` (or `root` itself when it is the JSON file)."""
    if root.is_file():
        return root
    if split not in COCO_SPLITS:
        raise InvalidInputError(
            f"COCO has captions for 'train' and 'val' only (its test images have none), "
            f"not {split!r}")
    for year in YEARS:
        for folder in (root / "annotations", root):
            path = folder / f"captions_{COCO_SPLITS[split]}{year}.json"
            if path.is_file():
                return path
    raise InvalidInputError(
        f"no COCO captions file for {split!r} under {root} "
        f"(looked for annotations/captions_{COCO_SPLITS[split]}2014.json and ...2017.json)")


def _image_dir(annotations: Path, image_dir: Path | None) -> Path:
    """Where the images are: given, or `<root>/<train2014>` named after the JSON file."""
    if image_dir is not None:
        return image_dir
    name = annotations.stem.removeprefix("captions_")  # captions_train2014 -> train2014
    root = annotations.parent.parent if annotations.parent.name == "annotations" else \
        annotations.parent
    for candidate in (root / name, root / "images" / name, root / "images"):
        if candidate.is_dir():
            return candidate
    raise InvalidInputError(
        f"cannot find the image folder for {annotations} (looked for {root / name}); "
        "pass image_dir=")


def _load_json(path: Path) -> dict[str, Any]:
    data = parse_json(read_text(path), str(path))
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise CorruptFileError(f"{path}: not a COCO captions file (needs 'images' and "
                               "'annotations' lists)")
    return data


def _id(value: Any) -> int | None:
    """A COCO id: an integer, or a string of digits as some converters write; else None."""
    if type(value) is int:
        return value
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else None


def _images(data: dict[str, Any], annotations: Path) -> dict[int, str]:
    """image id -> file name, each entry checked (a number or list as file name is an error)."""
    images = {}
    for i, im in enumerate(data["images"]):
        image_id = _id(im.get("id")) if isinstance(im, dict) else None
        if image_id is None or not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise CorruptFileError(
                f"{annotations}: images[{i}] needs an integer 'id' and a 'file_name' string")
        images[image_id] = im["file_name"]
    return images


def coco_records(root: Path, split: str = "train",
                 image_dir: Path | None = None) -> list[Record]:
    """One record per image with all its captions (in annotation-id order), images by id; a
    file_name that leaves the image folder is refused by the loader."""
    annotations = find_annotations(Path(root), split)
    data = _load_json(annotations)
    folder = _image_dir(annotations, Path(image_dir) if image_dir is not None else None)
    images = _images(data, annotations)
    notes = []  # (id, image_id, caption)
    for i, a in enumerate(data["annotations"]):
        ids = (_id(a.get("id", 0)), _id(a.get("image_id"))) if isinstance(a, dict) else (None,)
        if None in ids:
            raise CorruptFileError(
                f"{annotations}: annotations[{i}] needs integer 'id' and 'image_id'")
        notes.append((*ids, a.get("caption")))
    captions: dict[int, list[Any]] = {i: [] for i in images}
    for note_id, image_id, caption in sorted(notes, key=lambda n: n[0]):
        if image_id not in images:
            raise InvalidInputError(
                f"{annotations}: annotation {note_id} names image_id {image_id}, "
                "which is not in 'images'")
        captions[image_id].append(caption)
    records = []
    for image_id in sorted(images):
        path = folder / images[image_id]
        texts = clean_captions(captions[image_id], f"{path} (image_id {image_id} in {annotations})")
        records.append(Record(path, texts, {"image_id": image_id, "file_name": images[image_id]},
                              root=folder))
    return records
