"""Named inputs (gambar.inputs): layouts and images from files and request bodies, checked in
one line; digests that follow the content."""

import base64
import io

import pytest
from PIL import Image

from gambar.errors import GambarError, InvalidInputError
from gambar.inputs import Layout, decode_input, digest, normalize, parse_layout, read_input

BOX = {"box": [0.1, 0.2, 0.5, 0.9], "phrase": "red circle"}


def test_a_layout_round_trips_and_its_digest_ignores_formatting():
    layout = Layout.from_json([BOX])
    text = b'[ {"phrase": "red circle", "box": [0.1, 0.2, 0.5, 0.9]} ]'
    again = parse_layout(text, "x")
    assert again == layout and digest(again) == digest(layout)
    assert Layout.from_json(layout.to_json()) == layout


@pytest.mark.parametrize(("data", "message"), [
    ([{"box": [0, 0, 1, 1], "phrse": "cat"}], "unknown key 'phrse'; did you mean 'phrase'"),
    ({"objects": [BOX]}, "must be a JSON list"),
    ([], "1 to 16 objects"),
    ([BOX] * 17, "1 to 16 objects"),
    ([{"box": [0.5, 0, 0.4, 1]}], "must satisfy 0 <= x0 < x1"),
    ([{"box": [0, 0, 1]}], "four numbers"),
    ([{"box": [0, 0, 1, float("nan")]}], "four numbers"),
    ([{"box": [0, 0, 1, 1], "phrase": "\ud800"}], "phrase"),
    ([1, 2], "must be an object with 'box' and 'phrase'"),
    ("a red circle", "must be a JSON list"),
])
def test_bad_layouts_are_one_line(data, message):
    with pytest.raises(InvalidInputError, match=message) as err:
        Layout.from_json(data)
    assert "\n" not in str(err.value)


def _b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


@pytest.mark.parametrize(("value", "message"), [
    ("data:image/png;base64", "data: URL without its base64 content"),
    ("!!!", "not valid base64"),
    (base64.b64encode(b"hello").decode(), "not an image in a format gambar reads"),
    (5, "must be a base64-encoded image"),
])
def test_bad_image_bodies_are_one_line(value, message):
    with pytest.raises(GambarError, match=message) as err:
        decode_input("init", value)
    assert "BytesIO" not in str(err.value)


def test_an_image_body_decodes_with_or_without_a_data_url():
    image = Image.new("RGB", (8, 8), (200, 10, 10))
    plain = decode_input("init", _b64(image))
    url = decode_input("init", "data:image/png;base64," + _b64(image))
    assert digest(plain) == digest(url) == digest(image)


def test_a_layout_file_is_read_no_further_than_its_cap(tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (200 * 1024))
    with pytest.raises(InvalidInputError, match="over 64 KB"):
        read_input("layout", big)


def test_normalize_flattens_alpha_onto_white_and_applies_exif_orientation():
    clear = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert normalize("init", clear).getpixel((0, 0)) == (255, 255, 255)
    tall = Image.new("RGB", (4, 8), "black")
    exif = tall.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    tall.save(buf, format="JPEG", exif=exif)
    assert normalize("init", Image.open(io.BytesIO(buf.getvalue()))).size == (8, 4)
