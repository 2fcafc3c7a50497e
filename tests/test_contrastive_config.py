"""ContrastiveConfig's bounds: a forged contrastive config.json is a one-line error, never an
allocation of the size it asks for. Issue 19's reproductions."""

import json
import math
import shutil

import pytest
import torch

from gambar.contrastive.model import (
    MAX_FEATURES,
    PRESETS,
    ContrastiveConfig,
    ContrastiveModel,
    ContrastiveNet,
    load_contrastive,
)
from gambar.errors import CorruptFileError, InvalidInputError
from gambar.model_dir import MANIFEST
from gambar.text.setup import TextSetup


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny saved contrastive model (clip-tiny, small text encoder)."""
    path = tmp_path_factory.mktemp("clip") / "m"
    torch.manual_seed(0)
    text = TextSetup.build("small", ["a red circle", "dua bintang biru"], dim=32, depth=1,
                           heads=2, vocab_size=100)
    net = ContrastiveNet(PRESETS["clip-tiny"], text.dim, text.trainable)
    ContrastiveModel(net, text, name="tiny-clip").save(path)
    return path


@pytest.mark.parametrize(("edit", "words"), [
    # each asked for terabytes and raised RuntimeError from the allocator
    ({"width": 10**9}, "width must be between 1 and 1024, not 1000000000"),
    ({"embed_dim": 10**9}, "embed_dim must be between 1 and 1024"),
    ({"channels": [10**6]}, "channels[0] must be between 1 and 1024"),
    ({"image_size": 2**20}, "image_size must be between 8 and 512"),
    ({"image_size": 512, "channels": [1024]}, f"features, over {MAX_FEATURES}"),
    ({"text_head_depth": 10**6}, "text_head_depth must be between 0 and 4"),
    # loaded without a word: heads no block uses, a NaN clip that made every logit NaN
    ({"text_head_heads": 10**6}, "text_head_heads must be between 1 and 64"),
    ({"max_logit_scale": math.nan}, "a finite max_logit_scale > 1"),
    ({"channels": [8] * 40}, "channels must list 1 to 6 stages, not 40"),
])
def test_a_forged_contrastive_config_is_one_line(saved, tmp_path, edit, words):
    path = shutil.copytree(saved, tmp_path / "m")
    (path / MANIFEST).unlink()  # else the manifest catches the edit before the config check
    cfg = json.loads((path / "config.json").read_text())
    cfg["contrastive"].update(edit)
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CorruptFileError) as err:
        load_contrastive(path)
    message = str(err.value)
    assert "\n" not in message and str(path / "config.json") in message
    assert words in message, message


def test_the_bounds_leave_room_above_the_presets():
    """Every bound at once is still a valid config (the presets are far inside)."""
    ContrastiveConfig(image_size=512, channels=(64,) * 5 + (1024,), width=1024, embed_dim=1024,
                      text_head_depth=4, text_head_heads=64)
    with pytest.raises(InvalidInputError, match="divisible"):  # still checked after the bounds
        ContrastiveConfig(image_size=36, channels=(8, 16, 32))
