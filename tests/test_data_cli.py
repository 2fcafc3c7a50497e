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
