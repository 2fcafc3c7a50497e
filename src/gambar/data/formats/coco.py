"""COCO captions (Chen et al. 2015): `annotations/captions_<split><year>.json` + an image folder.

The JSON has "images" ({id, file_name, ...}) and "annotations" ({image_id, id, caption}); each image
has about five captions. Layout found under a root folder (the official download unpacked):
`annotations/captions_train2014.json` with images in `train2014/` (2017 likewise).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gambar.data.formats import Record, clean_captions
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
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise CorruptFileError(f"{path}: not a COCO captions file (needs 'images' and "
                               "'annotations' lists)")
    return data


def coco_records(root: Path, split: str = "train",
                 image_dir: Path | None = None) -> list[Record]:
    """One record per image with all its captions (in annotation-id order), images by id."""
    annotations = find_annotations(Path(root), split)
    data = _load_json(annotations)
    folder = _image_dir(annotations, Path(image_dir) if image_dir is not None else None)
    try:
        images = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
        notes = sorted(data["annotations"], key=lambda a: int(a.get("id", 0)))
        captions: dict[int, list[str]] = {i: [] for i in images}
        for a in notes:
            image_id = int(a["image_id"])
            if image_id not in images:
                raise InvalidInputError(
                    f"{annotations}: annotation {a.get('id')} names image_id {image_id}, "
                    "which is not in 'images'")
            captions[image_id].append(a.get("caption", ""))
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptFileError(f"{annotations}: malformed entry ({exc!r})") from None
    records = []
    for image_id in sorted(images):
        path = folder / images[image_id]
        texts = clean_captions(captions[image_id], f"{path} (image_id {image_id} in {annotations})")
        records.append(Record(path, texts, {"image_id": image_id, "file_name": images[image_id]}))
    return records
