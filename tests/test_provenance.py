"""`gambar info` and `--replay` on crafted PNGs: one-line errors, never a traceback."""

import json

import pytest

from gambar.cli import main
from gambar.provenance import MAX_TEXT_BYTES, read_provenance
from helpers_png import deep_json, png_of_size, text_chunk, with_text


@pytest.fixture
def drawn(tiny_model_dir, tmp_path, monkeypatch):
    """A PNG the tiny model drew (2 steps), in a fresh working folder."""
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "a red circle", "--model", str(tiny_model_dir), "--steps", "2",
                 "--seed", "5", "-o", "drawn.png", "-q"]) == 0
    return tmp_path / "drawn.png"


def info(capsys, path):
    code = main(["info", str(path)])
    out, err = capsys.readouterr()
    return code, out, err.strip()


def replay(capsys, model, path):
    code = main(["generate", "--replay", str(path), "--model", str(model), "-o", "again.png",
                 "--overwrite", "-q"])
    return code, capsys.readouterr().err.strip()


def assert_one_line(err, message):
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert message in err, err


def test_huge_header_is_read_without_decoding_pixels(drawn, capsys):
    """A 50000 x 50000 header (PIL: DecompressionBombError) costs nothing: no pixel is read."""
    prov = read_provenance(drawn)
    bomb = drawn.with_name("bomb.png")
    bomb.write_bytes(png_of_size(50_000, 50_000, [text_chunk(json.dumps(prov))]))
    code, out, err = info(capsys, bomb)
    assert code == 0 and "a red circle" in out, err


def test_provenance_after_the_image_data_is_found(drawn):
    moved = drawn.with_name("moved.png")
    prov = read_provenance(drawn)
    moved.write_bytes(with_text(drawn.read_bytes(), json.dumps(prov), after_idat=True))
    assert read_provenance(moved) == prov


@pytest.mark.parametrize("kind", [b"tEXt", b"zTXt", b"iTXt"])
def test_text_chunks_over_a_megabyte(drawn, capsys, kind):
    """PIL refuses compressed text over 1 MB (ValueError); gambar reads up to MAX_TEXT_BYTES."""
    prov = {**read_provenance(drawn), "note": "x" * 2**21}
    big = drawn.with_name("big.png")
    big.write_bytes(with_text(drawn.read_bytes(), json.dumps(prov), kind=kind))
    assert read_provenance(big) == prov
    over = drawn.with_name("over.png")
    over.write_bytes(with_text(drawn.read_bytes(), " " * (MAX_TEXT_BYTES + 1), kind=kind))
    code, _, err = info(capsys, over)
    assert code == 2
    assert_one_line(err, "over")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "is a JSON list, not a JSON object"),
        ("3.5", "is a number, not a JSON object"),
        ("null", "is null, not a JSON object"),
        ('"a red circle"', "is a JSON string, not a JSON object"),
        pytest.param(deep_json(100_000), "not valid JSON", id="list-100k-deep"),  # recursion
        pytest.param(deep_json(100, "dict"), "nests deeper", id="dict-100-deep"),
        ('{"prompt": "a red', "not valid JSON"),
    ],
)
def test_provenance_that_is_not_an_object(drawn, capsys, tiny_model_dir, text, message):
    bad = drawn.with_name("bad.png")
    bad.write_bytes(with_text(drawn.read_bytes(), text))
    code, _, err = info(capsys, bad)
    assert code == 2
    assert_one_line(err, message)
    code, err = replay(capsys, tiny_model_dir, bad)
    assert code == 2
    assert_one_line(err, message)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": "7"}, "'seed' must be a whole number"),
        ({"seed": 7.5}, "'seed' must be a whole number"),
        ({"seed": True}, "'seed' must be a whole number"),
        ({"steps": [2]}, "in its provenance, steps must be a whole number"),
        ({"guidance": {}}, "guidance must be a number"),
        ({"sampler": ["ddim"]}, "sampler must be text"),
        ({"size": None}, "its provenance field 'size' is null"),
        ({"prompt": None}, "'prompt' must be text"),
        ({"negative_prompt": 3}, "in its provenance, negative_prompt must be text"),
        ({"precision": 16}, "precision must be text"),
        ({"sampler_options": []}, "'sampler_options' must be an object"),
        ({"sampler_options": {"batch_size": 3}}, "unknown option 'batch_size'"),
        ({"sampler_options": {"eta": "1"}}, "eta must be a number"),
        ({"model_sha256": None}, "'model_sha256' must be text"),
        ({"model_sha256": ...}, "lacks 'model_sha256'"),  # ... = removed
        ({"prompt": ...}, "lacks 'prompt'"),
        ({"seed": -1}, "seed must be between"),  # ranges: the pipeline's own checks
        ({"steps": 0}, "steps must be between"),
        ({"size": 0}, "size must be"),
        ({"sampler": "nope"}, "unknown sampler"),
        ({"precision": "fp8"}, "unknown precision 'fp8'"),
        ({"sampler_options": {"eta": 7}}, "eta must be between"),
        ({"prompt": "\u200b"}, "prompt is empty"),
        ({"prompt": "a \udcff"}, "invalid character U+DCFF"),
    ],
)
def test_replay_fields_of_the_wrong_type_or_range(drawn, capsys, tiny_model_dir, change,
                                                  message):
    prov = read_provenance(drawn)
    for key, value in change.items():
        if value is ...:
            del prov[key]
        else:
            prov[key] = value
    bad = drawn.with_name("bad.png")
    bad.write_bytes(with_text(drawn.read_bytes(), json.dumps(prov)))
    assert info(capsys, bad)[0] == 0  # info shows whatever is there
    code, err = replay(capsys, tiny_model_dir, bad)
    assert code == 2
    assert_one_line(err, message)


def test_replay_of_a_grid_says_so(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "a red circle", "--model", str(tiny_model_dir), "--steps", "2",
                 "-n", "2", "--grid", "-o", "x.png", "-q"]) == 0
    code, err = replay(capsys, tiny_model_dir, tmp_path / "x-grid.png")
    assert code == 2
    assert_one_line(err, "is a grid of several images")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda png: png[:40], "not a readable image"),  # cut inside the first chunks
        (lambda png: b"GIF89a" + png[6:], "not a readable image"),
        (lambda png: png.replace(b"gambar\0{", b"gambar\0[", 1), "damaged (CRC)"),
    ],
)
def test_damaged_files(drawn, capsys, damage, message):
    bad = drawn.with_name("bad.png")
    bad.write_bytes(damage(drawn.read_bytes()))
    code, _, err = info(capsys, bad)
    assert code == 2
    assert_one_line(err, message)


def test_several_frames_become_an_animated_png_with_the_same_provenance(tmp_path):
    from PIL import Image

    from gambar.provenance import png_bytes

    frames = [Image.new("RGB", (8, 8), (k * 60, 0, 0)) for k in range(3)]
    path = tmp_path / "clip.png"
    path.write_bytes(png_bytes(frames, {"prompt": "a red circle", "seed": 1}))
    assert read_provenance(path) == {"prompt": "a red circle", "seed": 1}
    with Image.open(path) as im:
        assert im.format == "PNG" and im.n_frames == 3
        im.seek(2)
        assert im.convert("RGB").getpixel((0, 0)) == (120, 0, 0)
    still = tmp_path / "still.png"  # identical frames stay frames (Pillow would merge them)
    still.write_bytes(png_bytes([frames[0]] * 2 + [frames[2]], {"seed": 1}))
    with Image.open(still) as im:
        assert im.n_frames == 3
        im.seek(1)
        assert im.convert("RGB").getpixel((0, 0)) == (0, 0, 0)
    one = tmp_path / "one.png"
    one.write_bytes(png_bytes(frames[:1], {"seed": 1}))
    with Image.open(one) as im:
        assert getattr(im, "n_frames", 1) == 1
