"""The dataset builders check their image size through `check_image_size`, the loaders' one
check: the same bounds and the same words everywhere (issue 19: no fourth copy of a check)."""

import pytest

from gambar.data.emoji import build_emoji
from gambar.data.glyphs import build_glyphs
from gambar.data.loading import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, check_image_size
from gambar.errors import InvalidInputError


@pytest.mark.parametrize("build", [build_emoji, build_glyphs])
@pytest.mark.parametrize("size", [MIN_IMAGE_SIZE - 1, MAX_IMAGE_SIZE + 1, True, 32.0, "32"])
def test_builders_refuse_a_size_as_the_loaders_do(tmp_path, build, size):
    with pytest.raises(InvalidInputError) as expected:
        check_image_size(size)
    with pytest.raises(InvalidInputError) as got:
        build(tmp_path / "out", size=size, limit=1)
    assert str(got.value) == str(expected.value)
    assert not (tmp_path / "out").exists()  # refused before any work
