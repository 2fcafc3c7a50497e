"""CUB-200-2011 Birds and Oxford-102 Flowers in the layout of Reed et al. 2016 (cvpr2016_cub).

    ROOT/text_c10/<class>/<image>.txt     ten captions per image, one a line
    ROOT/trainvalclasses.txt, testclasses.txt (trainclasses.txt, valclasses.txt)   class names
    ROOT/images/<class>/<image>.jpg       CUB   (or ROOT/jpg/<image>.jpg for Flowers)

Splits are class-disjoint, as in Reed et al. and the GAN-INT-CLS/StackGAN line that trains on
"trainval" (150 bird / 82 flower classes) and tests on "test" (50 / 20): so gambar's "train" is
trainval, "val" is Reed's val classes (a subset of trainval) and "test" the test classes.
"""

from __future__ import annotations

import re
from pathlib import Path

from gambar.data.formats import (
    IMAGE_EXTENSIONS,
    BadItems,
    OutsideDatasetError,
    Record,
    clean_captions,
    inside,
    read_text,
    skip_reason,
)
from gambar.errors import CorruptFileError, InvalidInputError

TEXT_DIR = "text_c10"
# gambar split -> class-list files to try, in order
SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": ("trainvalclasses.txt", "trainclasses.txt"),
    "val": ("valclasses.txt",),
    "test": ("testclasses.txt",),
}
# where the images may lie under ROOT (CUB's and Flowers' official archives)
IMAGE_DIRS: tuple[str, ...] = ("images", "jpg", "CUB_200_2011/images", "102flowers/jpg")


def is_cub(root: Path) -> bool:
    """Whether `root` looks like Reed et al.'s layout (it has text_c10/)."""
    return (root / TEXT_DIR).is_dir()


def _classes(root: Path, split: str) -> list[str]:
    if split == "all":
        return sorted(p.name for p in (root / TEXT_DIR).iterdir() if p.is_dir())
    if split not in SPLIT_FILES:
        raise InvalidInputError(f"unknown split {split!r}; choose train, val, test or all")
    for name in SPLIT_FILES[split]:
        path = root / name
        if path.is_file():
            classes = []
            for n, line in enumerate(read_text(path).splitlines(), 1):
                c = line.strip()
                # a class is a folder of text_c10/: "../x" or "/x" would read captions elsewhere
                if c in (".", "..") or "/" in c or "\0" in c:
                    raise InvalidInputError(
                        f"{path}:{n}: {c!r} is not a class folder name (no '/', '.' or '..')")
                if c:
                    classes.append(c)
            return classes
    raise InvalidInputError(f"{root} has no {' or '.join(SPLIT_FILES[split])} for split {split!r}")


def _image_index(folder: Path) -> dict[tuple[str, str], Path]:
    """(class folder or "", file stem) -> image path, over every image below `folder`."""
    index: dict[tuple[str, str], Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            parent = path.parent.name if path.parent != folder else ""
            index[(parent, path.stem)] = path
            index.setdefault(("", path.stem), path)  # Flowers keeps all images in one folder
    return index


def _image_folder(root: Path, image_dir: Path | None) -> Path:
    if image_dir is not None:
        return Path(image_dir)
    for name in IMAGE_DIRS:
        if (root / name).is_dir():
            return root / name
    raise InvalidInputError(
        f"cannot find the images of {root} (looked for {', '.join(IMAGE_DIRS)}); pass image_dir=")


def _label(class_name: str) -> tuple[int | None, str]:
    """"001.Black_footed_Albatross" -> (1, "Black footed Albatross"); "class_00001" -> (1, ...)."""
    match = re.match(r"^(?:class_)?(\d+)[._]?(.*)$", class_name)
    if not match:
        return None, class_name.replace("_", " ")
    return int(match.group(1)), match.group(2).replace("_", " ") or class_name


def cub_records(root: Path, split: str = "train", image_dir: Path | None = None,
                bad: BadItems | None = None) -> list[Record]:
    """One record per caption file of the split's classes: its ten captions and its image.

    A caption file that resolves outside ROOT/text_c10 (a symlink out) is not read: it goes to
    `bad` (an OutsideDatasetError without one); an image outside its folder is refused by the
    loader.
    """
    root = Path(root)
    if not is_cub(root):
        raise InvalidInputError(f"{root} has no {TEXT_DIR}/ folder (Reed et al. 2016 layout)")
    images = _image_folder(root, image_dir)
    index = _image_index(images)
    records = []
    for class_name in _classes(root, split):
        folder = root / TEXT_DIR / class_name
        try:
            found = folder.is_dir()
        except OSError:  # a name too long for the file system
            found = False
        if not found:
            raise InvalidInputError(
                f"class {class_name!r} of split {split!r} has no folder {folder}")
        label, readable = _label(class_name)
        for text in sorted(folder.glob("*.txt")):
            try:
                inside(text, root / TEXT_DIR)
            except (OutsideDatasetError, CorruptFileError) as exc:
                if bad is None:
                    raise
                bad.add(str(text), skip_reason(exc, str(text)))
                continue
            captions = clean_captions(read_text(text).splitlines(), str(text))
            image = index.get((class_name, text.stem)) or index.get(("", text.stem))
            # An image that is absent keeps the path it should have, so the loader reports it.
            path = image if image is not None else images / class_name / f"{text.stem}.jpg"
            records.append(Record(path, captions, {"class": class_name, "label": label,
                                                   "class_name": readable, "image": text.stem},
                                  root=images))
    return records
