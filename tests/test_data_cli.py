"""`gambar data build` and `gambar data info` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from gambar.cli import main
from gambar.data.glyphs import FONT_DIR, FONTS


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_build_glyphs_then_info(in_tmp: Path, capsys):
    if not all((FONT_DIR / f.file).is_file() for f in FONTS):
        pytest.skip("glyph fonts not installed")
    assert main(["data", "build", "glyphs", "out", "--size", "32", "--limit", "40"]) == 0
    assert "wrote 40 images to out" in capsys.readouterr().out
    rows = (in_tmp / "out" / "train" / "metadata.jsonl").read_text().splitlines()
    assert Image.open(in_tmp / "out" / "train" / json.loads(rows[0])["file_name"]).size == (32, 32)
    assert main(["data", "info", "out"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "caption length (words)" in out and "#" in out
    grid = Image.open(in_tmp / "out-samples.png")
    assert grid.width > 64
    assert main(["data", "build", "glyphs", "out", "--limit", "3"]) == 2
    assert "already exists" in one_line_error(capsys)
    assert main(["data", "build", "glyphs", "out", "--limit", "3", "--overwrite"]) == 0


def test_info_reports_skipped_images_as_warning_lines(in_tmp: Path, capsys):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8), "red").save(in_tmp / name)
    (in_tmp / "metadata.jsonl").write_text(
        '{"file_name": "a.png", "text": "a red square"}\n'
        '{"file_name": "b.png", "text": "another red square"}\n'
        '{"file_name": "c.png", "text": "a lost square"}\n')
    assert main(["data", "info", str(in_tmp), "--grid", "g.png"]) == 0
    captured = capsys.readouterr()
    assert "2 images" in captured.out and "c.png" in captured.out
    assert "warning: " in captured.err and "skipped 1 of 3 images" in captured.err
    assert (in_tmp / "g.png").is_file()


def test_user_mistakes_are_one_line_errors(in_tmp: Path, capsys):
    assert main(["data", "info", "nowhere"]) == 2
    assert "does not exist" in one_line_error(capsys)
    (in_tmp / "folder").mkdir()
    Image.new("RGB", (8, 8)).save(in_tmp / "folder" / "x.png")
    (in_tmp / "folder" / "metadata.jsonl").write_text('{"file_name": "x.png"}\n')
    assert main(["data", "info", "folder"]) == 2
    assert "x.png" in one_line_error(capsys)
    assert main(["data", "build", "glyphs", "o", "--limit", "0"]) == 2
    assert "--limit" in one_line_error(capsys)


def _folder(root: Path, rows: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_info_skips_files_outside_the_dataset_and_pixel_bombs(in_tmp: Path, capsys):
    Image.new("RGB", (8, 8), "blue").save(in_tmp / "secret.png")
    ds = _folder(in_tmp / "ds", [{"file_name": "ok.png", "text": "a red square"},
                                 {"file_name": "../secret.png", "text": "up and out"},
                                 {"file_name": str(in_tmp / "secret.png"), "text": "absolute"},
                                 {"file_name": "link.png", "text": "a symlink out"},
                                 {"file_name": "big.png", "text": "a pixel bomb"}])
    Image.new("RGB", (8, 8), "red").save(ds / "ok.png")
    (ds / "link.png").symlink_to(in_tmp / "secret.png")
    Image.new("1", (9000, 9000)).save(ds / "big.png")  # 81 MP in about 10 KB
    assert main(["data", "info", "ds", "--grid", "g.png"]) == 0
    captured = capsys.readouterr()
    assert "1 images" in captured.out and "4 skipped" in captured.out
    assert "skipped 4 of 5 images (3 outside, 1 oversized)" in captured.err
    assert "9000x9000 = 81.0 megapixels" in captured.out
    assert "Traceback" not in captured.err and "DecompressionBomb" not in captured.err
    assert Image.open(in_tmp / "g.png").size == (68, 68)  # one 64-pixel image


@pytest.mark.parametrize("make", ["png", "latin1", "text", "empty", "too long", "coco:",
                                  "webdataset:"])
def test_info_on_what_is_not_a_dataset_is_one_line(in_tmp: Path, capsys, make: str):
    if make == "png":
        Image.new("RGB", (8, 8)).save(in_tmp / "target.png")
        target, expected = "target.png", "target.png is a file, not a dataset"
    elif make == "latin1":
        Image.new("RGB", (8, 8)).save(in_tmp / "a.png")
        (in_tmp / "metadata.jsonl").write_bytes(
            '{"file_name": "a.png", "text": "caf\xe9"}\n'.encode("latin-1"))
        target, expected = ".", "metadata.jsonl:1: not UTF-8 (byte 0xe9)"
    elif make == "text":
        (in_tmp / "notes.txt").write_text("hello")
        target, expected = "notes.txt", "notes.txt is a file, not a dataset"
    elif make == "empty":
        (in_tmp / "empty").mkdir()
        target, expected = "empty", "cannot tell the format of empty"
    elif make == "too long":
        target, expected = "a" * 5000, "cannot read aaa"
    else:  # a named format: its path is checked as well
        target, expected = make + "b" * 5000, "cannot read bbb"
        if make == "coco:":
            target, expected = "coco:nowhere", "nowhere does not exist"
    assert main(["data", "info", target]) == 2
    assert expected in one_line_error(capsys)


@pytest.mark.parametrize(("args", "expected"), [
    (["--size", "0"], "image size must be an integer from 8 to 512, not 0"),
    (["--size", "-3"], "image size must be an integer from 8 to 512, not -3"),
    (["--size", "30000"], "image size must be an integer from 8 to 512, not 30000"),
    (["--grid", "g.txt"], "--grid must be a .png file"),
    (["--grid", "folder.png"], "is a folder"),
    (["--grid", "file.txt/g.png"], "file.txt is a file, not a folder"),
    (["--grid", "/proc/g.png"], "does not accept new files"),
])
def test_info_options_are_checked_before_any_work(in_tmp: Path, capsys, args, expected):
    Image.new("RGB", (8, 8)).save(in_tmp / "a.png")
    _folder(in_tmp, [{"file_name": "a.png", "text": "a square"}])
    (in_tmp / "folder.png").mkdir()
    (in_tmp / "file.txt").write_text("x")
    assert main(["data", "info", ".", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no report printed: refused before reading the dataset
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err and expected in err


@pytest.mark.parametrize(("out", "extra", "expected"), [
    ("file.txt", [], "file.txt is a file; give a folder"),
    ("file.txt", ["--overwrite"], "file.txt is a file; give a folder"),
    ("file.txt/sub", [], "cannot create file.txt/sub"),
    ("o", ["--limit", "-1"], "--limit must be at least 1"),
    ("o", ["--size", "0"], "image size must be an integer from 8 to 512"),
    ("o", ["--size", "-1"], "image size must be an integer from 8 to 512"),
])
def test_build_with_a_bad_out_or_option_is_one_line(in_tmp: Path, capsys, out, extra, expected):
    if not all((FONT_DIR / f.file).is_file() for f in FONTS):
        pytest.skip("glyph fonts not installed")
    (in_tmp / "file.txt").write_text("x")
    assert main(["data", "build", "glyphs", out, "--limit", "2", *extra]) == 2
    assert expected in one_line_error(capsys)
    assert (in_tmp / "file.txt").read_text() == "x"


def test_info_default_grid_name_fits_a_file_name(in_tmp: Path, capsys):
    folder = in_tmp / ("b" * 250)
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    _folder(folder, [{"file_name": "a.png", "text": "a square"}])
    assert main(["data", "info", folder.name]) == 0
    assert (in_tmp / ("b" * 64 + "-samples.png")).is_file()
    assert main(["data", "info", f"imagefolder:{folder.name}"]) == 0  # no "imagefolder:" in it
    assert not list(in_tmp.glob("imagefolder*"))


def test_tiff_images_load_and_a_grid_goes_into_a_new_folder(in_tmp: Path, capsys):
    """TIFF loaded before the safe opener came; a --grid folder is made, as `generate -o` does."""
    Image.new("RGB", (8, 8), "green").save(in_tmp / "t.tif")
    _folder(in_tmp, [{"file_name": "t.tif", "text": "a green square"}])
    assert main(["data", "info", ".", "--grid", "new/dir/g.png"]) == 0
    assert "1 images" in capsys.readouterr().out and (in_tmp / "new/dir/g.png").is_file()
