"""Readers of the standard formats, on tiny fixtures each test writes itself."""

from __future__ import annotations

import io
import json
import logging
import struct
import tarfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gambar.data.formats import (
    OutsideDatasetError,
    Record,
    SkippedItemsWarning,
    load_record_image,
)
from gambar.data.formats.imagefolder import ImageFolderWriter
from gambar.data.formats.webdataset import WebDataset, expand_shards
from gambar.data.loading import (
    CaptionedImages,
    choose_caption,
    detect_format,
    load_dataset,
    square_image,
)
from gambar.errors import CorruptFileError, InvalidInputError
from gambar.imaging import MAX_IMAGE_PIXELS, ImageTooLargeError, open_image

COLORS = [(200, 30, 30), (30, 160, 60), (30, 70, 220), (240, 210, 0), (130, 40, 170)]


def _png(path: Path, color: tuple[int, int, int] = (200, 30, 30), size=(24, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _bytes(color: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), color).save(buf, format=fmt)
    return buf.getvalue()


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Shared pieces: image squaring, caption choice


def test_square_image_crops_centre_and_puts_transparency_on_white():
    wide = Image.new("RGB", (40, 20), (0, 0, 255))
    wide.paste((255, 0, 0), (0, 0, 10, 20))  # a red band at the left: cropped away
    out = square_image(wide, 16)
    assert out.size == (16, 16) and out.mode == "RGB"
    assert np.asarray(out)[:, :, 0].max() < 60
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert np.asarray(square_image(clear, 8)).min() == 255


def test_caption_choice_depends_only_on_seed_epoch_index():
    caps = [f"caption {i}" for i in range(10)]
    a = [choose_caption(caps, 0, e, 3) for e in range(20)]
    assert a == [choose_caption(caps, 0, e, 3) for e in range(20)]  # resumable
    assert len(set(a)) > 3  # a new choice each epoch
    assert choose_caption(caps, 1, 0, 3) != choose_caption(caps, 0, 0, 3) or \
        choose_caption(caps, 1, 1, 3) != choose_caption(caps, 0, 1, 3)
    assert choose_caption(["only"], 5, 9, 9) == "only"


# ---------------------------------------------------------------------------------------------
# imagefolder + metadata.jsonl


@pytest.fixture
def imagefolder(tmp_path: Path) -> Path:
    root = tmp_path / "folder"
    for split, n in (("train", 3), ("test", 2)):
        rows = []
        for i in range(n):
            _png(root / split / f"{i}.png", COLORS[i])
            rows.append({"file_name": f"{i}.png", "text": f"{split} picture {i}", "label": i})
        _jsonl(root / split / "metadata.jsonl", rows)
    # one image with several captions
    _jsonl(root / "train" / "metadata.jsonl", [
        {"file_name": "0.png", "captions": ["a red one", "merah"], "label": 0},
        {"file_name": "1.png", "text": "a green one", "label": 1},
        {"file_name": "2.png", "text": ["a blue one"], "label": 2},
    ])
    return root


def test_imagefolder_splits_captions_and_metadata(imagefolder: Path):
    assert detect_format(imagefolder) == "imagefolder"
    train = load_dataset(imagefolder, size=8, split="train")
    assert isinstance(train, CaptionedImages) and len(train) == 3
    image, caption, meta = train[1]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32
    assert -1 <= image.min() and image.max() <= 1
    assert caption == "a green one" and meta["label"] == 1 and meta["source"] == "imagefolder"
    seen = {train.item(0, epoch)[1] for epoch in range(12)}
    assert seen == {"a red one", "merah"}
    assert len(load_dataset(imagefolder, split="test")) == 2
    assert len(load_dataset(f"imagefolder:{imagefolder}", split="all")) == 5
    with pytest.raises(InvalidInputError, match="no 'val' split"):
        load_dataset(imagefolder, split="val")


def test_imagefolder_flat_folder_is_the_train_split(tmp_path: Path):
    _png(tmp_path / "a.png")
    _jsonl(tmp_path / "metadata.jsonl", [{"file_name": "a.png", "text": "a red square"}])
    ds = load_dataset(tmp_path, size=8)
    assert len(ds) == 1 and ds[0][1] == "a red square"


def test_missing_and_corrupt_images_are_reported_and_skipped(imagefolder: Path, caplog):
    (imagefolder / "train" / "1.png").unlink()
    (imagefolder / "train" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with caplog.at_level(logging.WARNING, logger="gambar.data"), \
            pytest.warns(SkippedItemsWarning, match=r"skipped 2 of 3 images"):
        ds = load_dataset(imagefolder, split="train")
    assert len(ds) == 1
    logged = caplog.text
    assert str(imagefolder / "train" / "1.png") in logged and "missing" in logged
    assert str(imagefolder / "train" / "2.png") in logged and "unreadable" in logged
    assert {reason.split()[0] for _, reason in ds.skipped} == {"missing", "unreadable:"}


def test_corrupt_image_found_late_names_its_path(imagefolder: Path):
    path = imagefolder / "train" / "1.png"
    path.write_bytes(path.read_bytes()[:30])  # truncated after the header
    ds = load_dataset(imagefolder, split="train", verify=False)
    with pytest.raises(CorruptFileError, match="1.png"):
        ds[1]


def test_image_without_caption_is_an_error_naming_it(imagefolder: Path):
    _jsonl(imagefolder / "test" / "metadata.jsonl",
           [{"file_name": "0.png", "text": "fine"}, {"file_name": "1.png", "text": "  "}])
    with pytest.raises(InvalidInputError, match=r"1\.png.*has no caption"):
        load_dataset(imagefolder, split="test")
    _jsonl(imagefolder / "test" / "metadata.jsonl", [{"file_name": "0.png", "text": "fine"}])
    with pytest.raises(InvalidInputError, match=r"test/1\.png has no caption"):
        load_dataset(imagefolder, split="test")  # an image no row names


def test_malformed_metadata_line_is_named(imagefolder: Path):
    (imagefolder / "test" / "metadata.jsonl").write_text('{"file_name": "0.png"\n')
    with pytest.raises(CorruptFileError, match=r"metadata.jsonl:1"):
        load_dataset(imagefolder, split="test")


def test_imagefolder_reads_metadata_csv(tmp_path: Path):
    _png(tmp_path / "x.png")
    (tmp_path / "metadata.csv").write_text("file_name,text\nx.png,\"a red, square thing\"\n")
    assert load_dataset(tmp_path, size=8)[0][1] == "a red, square thing"


# ---------------------------------------------------------------------------------------------
# COCO captions


def _coco(root: Path, split: str = "train", n_images: int = 3, captions: int = 5) -> Path:
    images, notes = [], []
    for i in range(n_images):
        name = f"COCO_{split}2014_{i:012d}.jpg"
        Image.new("RGB", (32, 24), COLORS[i]).save(_png(root / f"{split}2014" / name))
        images.append({"id": 100 + i, "file_name": name, "width": 32, "height": 24})
        notes += [{"id": 1000 * i + k, "image_id": 100 + i, "caption": f"image {i} caption {k}"}
                  for k in range(captions)]
    path = root / "annotations" / f"captions_{split}2014.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": notes[::-1]}))
    return path


def test_coco_five_captions_per_image(tmp_path: Path):
    _coco(tmp_path, "train")
    _coco(tmp_path, "val", n_images=2)
    assert detect_format(tmp_path) == "coco"
    ds = load_dataset(tmp_path, size=16, split="train")
    assert len(ds) == 3
    rec = ds.records[0]
    assert rec.captions == tuple(f"image 0 caption {k}" for k in range(5))  # annotation-id order
    assert rec.metadata["image_id"] == 100
    _, caption, meta = ds[2]
    assert caption.startswith("image 2 caption") and len(meta["captions"]) == 5
    assert len(load_dataset(tmp_path, split="val")) == 2
    assert len(load_dataset(tmp_path, split="all")) == 5
    by_file = load_dataset(f"coco:{tmp_path / 'annotations' / 'captions_val2014.json'}")
    assert len(by_file) == 2
    with pytest.raises(InvalidInputError, match="test images have none"):
        load_dataset(f"coco:{tmp_path}", split="test")


def test_coco_missing_image_and_uncaptioned_image(tmp_path: Path):
    path = _coco(tmp_path, "train")
    (tmp_path / "train2014" / "COCO_train2014_000000000001.jpg").unlink()
    with pytest.warns(SkippedItemsWarning, match="000000000001.jpg"):
        assert len(load_dataset(tmp_path)) == 2
    data = json.loads(path.read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 102]
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidInputError, match=r"COCO_train2014_000000000002\.jpg.*no caption"):
        load_dataset(tmp_path)
    data["annotations"].append({"id": 7, "image_id": 999, "caption": "orphan"})
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidInputError, match="image_id 999"):
        load_dataset(tmp_path)
    path.write_text("{not json")
    with pytest.raises(CorruptFileError, match="captions_train2014.json"):
        load_dataset(tmp_path)


# ---------------------------------------------------------------------------------------------
# CUB-200 / Oxford-102 (Reed et al. 2016)


def _cub(root: Path, flowers: bool = False) -> Path:
    classes = ["class_00001", "class_00002", "class_00003"] if flowers else \
        ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    for c, name in enumerate(classes):
        for i in range(2):
            stem = f"image_{c}{i:04d}" if flowers else f"{name.split('.')[1]}_{i:04d}"
            text = root / "text_c10" / name / f"{stem}.txt"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text("".join(f"bird {c} picture {i} caption {k}\n" for k in range(10)))
            image = root / "jpg" / f"{stem}.jpg" if flowers else \
                root / "images" / name / f"{stem}.jpg"
            _png(image, COLORS[c])
    (root / "trainvalclasses.txt").write_text("\n".join(classes[:2]) + "\n")
    (root / "testclasses.txt").write_text(classes[2] + "\n")
    return root


@pytest.mark.parametrize("flowers", [False, True])
def test_cub_class_disjoint_splits_ten_captions(tmp_path: Path, flowers: bool):
    _cub(tmp_path, flowers)
    assert detect_format(tmp_path) == "cub"
    train, test = load_dataset(tmp_path, size=8), load_dataset(tmp_path, size=8, split="test")
    assert len(train) == 4 and len(test) == 2
    train_classes = {r.metadata["class"] for r in train.records}
    test_classes = {r.metadata["class"] for r in test.records}
    assert not train_classes & test_classes
    assert all(len(r.captions) == 10 for r in train.records)
    assert test.records[0].metadata["label"] == 3
    with pytest.raises(InvalidInputError, match="valclasses.txt"):
        load_dataset(tmp_path, split="val")


def test_cub_empty_caption_file_and_missing_image(tmp_path: Path):
    _cub(tmp_path)
    image = tmp_path / "images" / "003.Sooty_Albatross" / "Sooty_Albatross_0001.jpg"
    image.unlink()
    with pytest.warns(SkippedItemsWarning, match="Sooty_Albatross_0001.jpg"):
        assert len(load_dataset(f"cub:{tmp_path}", split="test")) == 1
    empty = tmp_path / "text_c10" / "001.Black_footed_Albatross" / "Black_footed_Albatross_0000.txt"
    empty.write_text("\n  \n")
    with pytest.raises(InvalidInputError, match="Black_footed_Albatross_0000.txt has no caption"):
        load_dataset(tmp_path)


# ---------------------------------------------------------------------------------------------
# webdataset


def _shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, files in samples:
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _good(key: str, i: int) -> tuple[str, dict[str, bytes]]:
    return key, {"jpg": _bytes(COLORS[i % 5], "JPEG"), "txt": f"sample {key}\nalt {key}".encode(),
                 "json": json.dumps({"score": i}).encode()}


def test_webdataset_streams_samples_in_order(tmp_path: Path):
    _shard(tmp_path / "train-000.tar", [_good(f"a{i}", i) for i in range(3)])
    _shard(tmp_path / "train-001.tar", [_good(f"b{i}", i) for i in range(2)])
    assert detect_format(tmp_path) == "webdataset"
    ds = load_dataset(tmp_path, size=8)
    assert isinstance(ds, WebDataset)
    items = list(ds)
    assert [m["key"] for _, _, m in items] == ["a0", "a1", "a2", "b0", "b1"]
    image, caption, meta = items[1]
    assert image.shape == (3, 8, 8) and caption in ("sample a1", "alt a1")
    assert meta["score"] == 1 and meta["captions"] == ["sample a1", "alt a1"]
    again = [c for _, c, _ in ds]
    assert again == [c for _, c, _ in items]  # same epoch, same captions
    pattern = load_dataset(f"webdataset:{tmp_path}/train-{{000..001}}.tar", size=8)
    assert len(list(pattern)) == 5
    assert expand_shards(f"{tmp_path}/train-{{000..001}}.tar") == \
        [tmp_path / "train-000.tar", tmp_path / "train-001.tar"]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=CaptionedImages.collate)
    assert [b[0].shape[0] for b in loader] == [2, 2, 1]


def test_webdataset_bad_samples_are_reported_and_skipped(tmp_path: Path, caplog):
    _shard(tmp_path / "s.tar", [
        _good("ok0", 0),
        ("noimage", {"txt": b"a caption without a picture"}),
        ("broken", {"png": b"\x89PNG\r\n\x1a\nnope", "txt": b"a broken picture"}),
        _good("ok1", 1),
    ])
    ds = load_dataset(tmp_path / "s.tar", size=8)
    with caplog.at_level(logging.WARNING, logger="gambar.data"), \
            pytest.warns(SkippedItemsWarning, match=r"skipped 2 of 4 images"):
        keys = [m["key"] for _, _, m in ds]
    assert keys == ["ok0", "ok1"]
    assert "s.tar:noimage" in caplog.text and "s.tar:broken.png" in caplog.text


def test_webdataset_sample_without_caption_is_an_error(tmp_path: Path):
    _shard(tmp_path / "s.tar", [_good("ok0", 0), ("silent", {"png": _bytes(COLORS[0])})])
    with pytest.raises(InvalidInputError, match=r"s\.tar:silent.*has no caption"):
        list(load_dataset(tmp_path / "s.tar"))


def test_webdataset_truncated_shard_keeps_what_was_read(tmp_path: Path):
    path = _shard(tmp_path / "s.tar", [_good(f"k{i}", i) for i in range(4)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(SkippedItemsWarning, match="unreadable shard"):
        n = len(list(WebDataset([path], 8)))
    assert 0 < n < 4


def test_unknown_format_and_missing_path(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InvalidInputError, match="cannot tell the format"):
        load_dataset(tmp_path)
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(InvalidInputError, match="unknown split"):
        load_dataset(tmp_path, split="holdout")


# ---------------------------------------------------------------------------------------------
# Hostile datasets (issue 19): paths out of the dataset, pixel bombs, bad metadata


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height but holds no pixel data (a few dozen bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                                      8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


def _outside_entry(tmp_path: Path, how: str) -> str:
    """A file_name inside `tmp_path / "ds"` that reaches `tmp_path / "other" / "a.png"`."""
    target = _png(tmp_path / "other" / "a.png")
    if how == "relative":
        return "../other/a.png"
    if how == "absolute":
        return str(target)
    (tmp_path / "ds").mkdir(exist_ok=True)
    (tmp_path / "ds" / "link.png").symlink_to(target)
    return "link.png"


@pytest.mark.parametrize("how", ["relative", "absolute", "symlink"])
def test_imagefolder_refuses_files_outside_the_dataset(tmp_path: Path, how: str, caplog):
    name = _outside_entry(tmp_path, how)
    root = tmp_path / "ds"
    _png(root / "ok.png")
    _jsonl(root / "metadata.jsonl", [{"file_name": "ok.png", "text": "inside"},
                                     {"file_name": name, "text": "outside"}])
    for verify in (True, False):
        with caplog.at_level(logging.WARNING, logger="gambar.data"), \
                pytest.warns(SkippedItemsWarning, match=r"skipped 1 of 2 images \(1 outside\)"):
            ds = load_dataset(root, size=8, verify=verify)
        assert [r.captions for r in ds.records] == [("inside",)]
        assert ds.skipped[0][1].startswith("outside: resolves to " + str(tmp_path / "other"))
        assert f"skipped {root / name}" in caplog.text
    # a record made by hand is refused when it is read, too
    forged = Record(root / name, ("x",), root=root)
    with pytest.raises(OutsideDatasetError, match="outside the dataset folder"):
        load_record_image(forged)


def test_files_elsewhere_inside_the_dataset_still_load(tmp_path: Path):
    _png(tmp_path / "shared" / "a.png")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "b.png").symlink_to(tmp_path / "shared" / "a.png")
    _jsonl(tmp_path / "train" / "metadata.jsonl", [{"file_name": "../shared/a.png", "text": "a"},
                                                   {"file_name": "b.png", "text": "b"}])
    assert len(load_dataset(tmp_path, size=8)) == 2  # ../ within the dataset root is fine


def test_coco_refuses_file_names_outside_the_image_folder(tmp_path: Path):
    path = _coco(tmp_path, "train", n_images=3)
    _png(tmp_path / "secret.png")
    data = json.loads(path.read_text())
    data["images"][1]["file_name"] = "../secret.png"
    data["images"][2]["file_name"] = str(tmp_path / "secret.png")
    path.write_text(json.dumps(data))
    with pytest.warns(SkippedItemsWarning, match=r"skipped 2 of 3 images \(2 outside\)"):
        ds = load_dataset(tmp_path, size=8)
    assert [r.metadata["image_id"] for r in ds.records] == [100]


def test_cub_refuses_captions_and_images_outside_and_bad_class_names(tmp_path: Path):
    root = _cub(tmp_path / "cub")
    secret = tmp_path / "secret.txt"
    secret.write_text("a caption from elsewhere\n")
    birds = root / "text_c10" / "001.Black_footed_Albatross"
    (birds / "Black_footed_Albatross_0000.txt").unlink()
    (birds / "Black_footed_Albatross_0000.txt").symlink_to(secret)
    image = root / "images" / "002.Laysan_Albatross" / "Laysan_Albatross_0001.jpg"
    image.unlink()
    image.symlink_to(_png(tmp_path / "elsewhere.jpg"))
    with pytest.warns(SkippedItemsWarning, match=r"skipped 2 of 4 images \(2 outside\)"):
        ds = load_dataset(root, size=8)
    assert all("elsewhere" not in c for r in ds.records for c in r.captions)
    assert len(ds) == 2
    (root / "testclasses.txt").write_text("../../outside\n")
    with pytest.raises(InvalidInputError, match=r"testclasses.txt:1: '../../outside' is not"):
        load_dataset(root, split="test")
    (root / "testclasses.txt").write_text("c" * 300 + "\n")
    with pytest.raises(InvalidInputError, match=r"class 'c+' of split 'test' has no folder"):
        load_dataset(root, split="test")


def test_webdataset_refuses_a_shard_linked_from_outside(tmp_path: Path):
    _shard(tmp_path / "data" / "train-000.tar", [_good("a", 0)])
    (tmp_path / "data" / "train-001.tar").symlink_to(
        _shard(tmp_path / "private" / "p.tar", [_good("secret", 1)]))
    for spec in (tmp_path / "data", f"webdataset:{tmp_path}/data/*.tar"):
        with pytest.warns(SkippedItemsWarning, match="outside"):
            assert [m["key"] for _, _, m in load_dataset(spec, size=8)] == ["a"]


def test_images_over_the_pixel_cap_are_skipped_before_decoding(tmp_path: Path, caplog):
    _png(tmp_path / "ok.png")
    # header-only files: decoding would call them unreadable, so "oversized" proves the header
    # was checked first. 100 MP is past gambar's cap (Pillow only warns), 2.5 GP past Pillow's.
    _png_header(tmp_path / "big.png", 10_000, 10_000)
    _png_header(tmp_path / "bomb.png", 50_000, 50_000)
    _jsonl(tmp_path / "metadata.jsonl", [{"file_name": n, "text": n} for n in
                                         ("ok.png", "big.png", "bomb.png")])
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # none may escape
        with pytest.warns(SkippedItemsWarning, match=r"skipped 2 of 3 images \(2 oversized\)"):
            ds = load_dataset(tmp_path, size=8)
    assert len(ds) == 1
    assert "10000x10000 = 100.0 megapixels" in dict(ds.skipped)[str(tmp_path / "big.png")]
    with pytest.raises(ImageTooLargeError, match="big.png.*megapixel limit"):
        load_dataset(tmp_path, size=8, verify=False).image(1)
    assert MAX_IMAGE_PIXELS <= 64 * 2**20


def test_open_image_cap_and_formats(tmp_path: Path):
    path = _png(tmp_path / "a.png", size=(100, 100))
    assert open_image(path, "a", max_pixels=10_000).size == (100, 100)
    with pytest.raises(ImageTooLargeError, match=r"a: 100x100 = 0.0 megapixels"):
        open_image(path, "a", max_pixels=9_999)
    Image.new("RGB", (4, 4)).save(tmp_path / "t.png", format="PPM")  # a PPM named .png
    with pytest.raises(CorruptFileError, match="t.png: not an image in a format gambar reads"):
        open_image(tmp_path / "t.png", "t.png")


def test_webdataset_oversized_image_and_member_are_skipped(tmp_path: Path, monkeypatch):
    import gambar.data.formats.webdataset as wds

    bomb = _png_header(tmp_path / "h.png", 50_000, 50_000).read_bytes()
    _shard(tmp_path / "s.tar", [_good("ok", 0), ("bomb", {"png": bomb, "txt": b"a bomb"}),
                                ("huge", {"png": _bytes(COLORS[0]), "txt": b"x" * 5000})])
    monkeypatch.setattr(wds, "MAX_MEMBER_BYTES", 4000)
    with pytest.warns(SkippedItemsWarning, match=r"skipped 2 of 3 images \(2 oversized\)"):
        assert [m["key"] for _, _, m in load_dataset(tmp_path / "s.tar", size=8)] == ["ok"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_metadata_that_is_not_utf8_names_file_and_line(tmp_path: Path, fmt: str):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    if fmt == "jsonl":
        text = '{"file_name": "a.png", "text": "cafe"}\n{"file_name": "b.png", "text": "café"}\n'
    else:
        text = "file_name,text\na.png,cafe\nb.png,café\n"
    (tmp_path / f"metadata.{fmt}").write_bytes(text.encode("latin-1"))
    line = 2 if fmt == "jsonl" else 3
    with pytest.raises(CorruptFileError, match=rf"metadata\.{fmt}:{line}: not UTF-8 \(byte 0xe9\)"):
        load_dataset(tmp_path)


def test_other_text_files_that_are_not_utf8_are_one_line_errors(tmp_path: Path):
    path = _coco(tmp_path / "coco")
    path.write_bytes(path.read_bytes().replace(b"caption 0", "légende".encode("latin-1")))
    with pytest.raises(CorruptFileError, match=r"captions_train2014\.json:1: not UTF-8"):
        load_dataset(tmp_path / "coco")
    root = _cub(tmp_path / "cub")
    (root / "text_c10" / "003.Sooty_Albatross" / "Sooty_Albatross_0000.txt").write_bytes(
        "un oiseau gris foncé\n".encode("latin-1"))
    with pytest.raises(CorruptFileError, match=r"Sooty_Albatross_0000\.txt:1: not UTF-8"):
        load_dataset(root, split="test")


@pytest.mark.parametrize(("line", "message"), [
    ("[1, 2]", r"metadata\.jsonl:2: expected a JSON object per line, not list"),
    ('"a string"', r"metadata\.jsonl:2: expected a JSON object per line, not str"),
    ('{"file_name": 5, "text": "x"}', r"metadata\.jsonl:2: 'file_name' must be a string, not int"),
    ('{"file_name": ["b.png"], "text": "x"}', r"'file_name' must be a string, not list"),
    ('{"file_name": "b.png", "text": 5}', r"jsonl:2\): a caption must be a string, not int"),
    ('{"file_name": "b.png", "text": {"a": 1}}', r"a caption must be a string, not dict"),
    ('{"file_name": "b.png", "captions": ["ok", 3]}', r"a caption must be a string, not int"),
    ("[" * 100_000, r"metadata\.jsonl:2: not valid JSON \(nested too deeply\)"),
    ('{"file_name": "b.png", "text": "x"', r"metadata\.jsonl:2: not valid JSON"),
])
def test_malformed_metadata_rows_are_one_line_errors_naming_the_line(tmp_path: Path, line: str,
                                                                    message: str):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    (tmp_path / "metadata.jsonl").write_text(
        '{"file_name": "a.png", "text": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises((InvalidInputError, CorruptFileError), match=message):
        load_dataset(tmp_path, size=8)


def test_metadata_with_a_bom_and_unicode_line_separators_loads(tmp_path: Path):
    _png(tmp_path / "a.png")
    row = json.dumps({"file_name": "a.png", "text": "two\u2028lines"}, ensure_ascii=False)
    (tmp_path / "metadata.jsonl").write_bytes(b"\xef\xbb\xbf" + row.encode() + b"\n")
    assert load_dataset(tmp_path, size=8).records[0].captions == ("two\u2028lines",)


def test_coco_entries_of_the_wrong_type_are_one_line_errors(tmp_path: Path):
    path = _coco(tmp_path)
    data = json.loads(path.read_text())
    data["images"][0]["file_name"] = 5
    path.write_text(json.dumps(data))
    with pytest.raises(CorruptFileError, match=r"images\[0\] needs an integer 'id' and a"):
        load_dataset(tmp_path)
    data = json.loads(path.read_text().replace('"file_name": 5', '"file_name": "x.jpg"'))
    data["annotations"][0] = ["not", "an", "object"]
    path.write_text(json.dumps(data))
    with pytest.raises(CorruptFileError, match=r"annotations\[0\] needs integer"):
        load_dataset(tmp_path)


def test_unreadable_metadata_and_odd_names_are_reported(tmp_path: Path, monkeypatch):
    _png(tmp_path / "a.png")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    _jsonl(tmp_path / "metadata.jsonl", [{"file_name": "a.png", "text": "a"},
                                         {"file_name": "loop.png", "text": "a symlink loop"},
                                         {"file_name": "x\0y.png", "text": "a NUL"},
                                         {"file_name": "new\nline.png", "text": "two lines"},
                                         {"file_name": "x" * 300 + ".png", "text": "too long"}])
    with pytest.warns(SkippedItemsWarning, match=r"skipped 4 of 5 images"):
        ds = load_dataset(tmp_path, size=8)
    assert len(ds) == 1 and all("\n" not in w + r for w, r in ds.skipped)
    real = Path.read_bytes

    def denied(self: Path) -> bytes:
        if self.name == "metadata.jsonl":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)  # root reads anything, so pretend
    with pytest.raises(CorruptFileError, match=r"metadata\.jsonl: cannot read it \(Permission"):
        load_dataset(tmp_path, size=8)


def test_a_plain_file_and_bad_options_are_one_line_errors(tmp_path: Path):
    png = _png(tmp_path / "picture.png")
    with pytest.raises(InvalidInputError, match="picture.png is a file, not a dataset"):
        load_dataset(png)
    _jsonl(tmp_path / "metadata.jsonl", [{"file_name": "picture.png", "text": "a"}])
    for size in (0, -3, 4096, 64.0):
        with pytest.raises(InvalidInputError, match="image size must be an integer from 8 to 512"):
            load_dataset(tmp_path, size=size)
    for limit in (0, -1):
        with pytest.raises(InvalidInputError, match="limit must be"):
            load_dataset(tmp_path, size=8, limit=limit)


def test_writer_refuses_a_file_or_an_uncreatable_folder(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match="file is a file; give a folder"):
        ImageFolderWriter(tmp_path / "file", overwrite=True)
    with pytest.raises(InvalidInputError, match="cannot create .*file/sub"):
        ImageFolderWriter(tmp_path / "file" / "sub")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "README.md").write_bytes("r\xe9sum\xe9".encode("latin-1"))
    with pytest.raises(InvalidInputError, match="not a dataset built by gambar"):
        ImageFolderWriter(tmp_path / "old", overwrite=True)
