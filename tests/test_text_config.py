"""A saved model's text encoder entry and tokenizer.json, forged or damaged: one-line errors naming
the file and the key, and no allocation a forged size asks for. Issue 19's reproductions.

SHA256SUMS is deleted after each edit (as for a model saved before manifests), so that the config
checks themselves are what is tested, not the manifest that would otherwise catch the edit first.
"""

import json
import re
import shutil

import pytest

import gambar
from gambar.cli import main
from gambar.errors import CorruptFileError, InvalidInputError
from gambar.model_dir import MANIFEST
from gambar.text import SmallTextConfig, SmallTextEncoder
from gambar.text.small import MAX_PARAMETERS


@pytest.fixture
def model(tiny_model_dir, tmp_path):
    """A copy of the tiny saved model (small text encoder: dim 32, depth 1, heads 2), unsealed."""
    path = shutil.copytree(tiny_model_dir, tmp_path / "m")
    (path / MANIFEST).unlink()
    return path


def edit_text_config(path, key, value):
    cfg = json.loads((path / "config.json").read_text())
    cfg["text_encoder"]["config"][key] = value
    (path / "config.json").write_text(json.dumps(cfg))


def load_error(path) -> str:
    with pytest.raises(CorruptFileError) as err:
        gambar.load(path)
    message = str(err.value)
    assert "\n" not in message and "re-save or re-download" in message, message
    return message


@pytest.mark.parametrize(("key", "value", "words"), [
    ("heads", 0, "text.heads must be between 1 and 64, not 0"),  # was ZeroDivisionError
    ("heads", -2, "text.heads must be between 1 and 64, not -2"),
    ("heads", None, "'text_encoder.config.heads' expects int, got None"),
    ("vocab_size", 10**9, "text.vocab_size must be between 1 and 262144"),  # tried 128 GB
    ("vocab_size", 262_145, "text.vocab_size must be between 1 and 262144"),
    ("vocab_size", 1e9, "'text_encoder.config.vocab_size' expects int, got 1000000000.0"),
    ("dim", "32", "'text_encoder.config.dim' expects int, got '32'"),
    ("dim", True, "'text_encoder.config.dim' expects int, got True"),
    ("dim", 10**6, "text.dim must be between 1 and 4096"),  # tried 12 TB
    ("depth", 65, "text.depth must be between 1 and 64, not 65"),
    ("max_length", 4097, "text.max_length must be between 2 and 4096, not 4097"),
    ("dropout", "x", "'text_encoder.config.dropout' expects float, got 'x'"),
    ("extra", 1, "unknown key 'text_encoder.config.extra'"),
])
def test_a_forged_text_encoder_config_is_one_line_naming_key_and_file(model, key, value, words):
    edit_text_config(model, key, value)
    message = load_error(model)
    assert str(model / "config.json") in message and words in message, message


@pytest.mark.parametrize(("entry", "words"), [
    ([], "'text_encoder' must be a table with a 'kind', not []"),  # was TypeError
    ({"name": "small-transformer"}, "unknown text encoder None"),  # no kind: was KeyError
    ({"kind": [1]}, "unknown text encoder [1]"),
    ({"kind": "small"}, "[text_encoder.config] must be a table, got None"),  # was KeyError
    ({"kind": "small", "config": [1]}, "[text_encoder.config] must be a table, got [1]"),
])
def test_a_malformed_text_encoder_entry_names_the_file(model, entry, words):
    cfg = json.loads((model / "config.json").read_text())
    cfg["text_encoder"] = entry
    (model / "config.json").write_text(json.dumps(cfg))
    message = load_error(model)
    assert str(model / "config.json") in message and words in message, message


@pytest.mark.parametrize(("content", "words"), [
    (b'{"version": "1.0", "model": "\xff\xfe"}', "is not UTF-8 text"),  # was UnicodeDecodeError
    (b"not json", "is damaged"),
    (b"[]", "is damaged"),
])
def test_a_damaged_tokenizer_names_its_file(model, content, words):
    (model / "tokenizer.json").write_bytes(content)
    message = load_error(model)
    assert f"{model / 'tokenizer.json'} {words}" in message, message


def test_the_cli_prints_a_forged_config_as_one_line(model, tmp_path, capsys):
    edit_text_config(model, "heads", 0)
    out = str(tmp_path / "x.png")
    assert main(["generate", "a red circle", "--model", str(model), "-o", out, "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "text.heads" in err


def test_sizes_are_checked_before_divisibility():
    with pytest.raises(InvalidInputError, match="text.heads must be between 1 and 64"):
        SmallTextConfig(vocab_size=100, dim=32, heads=0)
    with pytest.raises(InvalidInputError, match="divisible"):
        SmallTextConfig(vocab_size=100, dim=30, heads=4)


def test_parameter_count_is_exact_and_budgeted():
    """Each size within its cap can still multiply into gigabytes; the budget stops that."""
    enc = SmallTextEncoder.from_captions(["a red circle", "dua bintang biru"], vocab_size=100,
                                         dim=32, depth=2, heads=4, max_length=16)
    assert enc.cfg.parameters == sum(p.numel() for p in enc.parameters())
    big = {"vocab_size": 200_000, "dim": 1024, "depth": 4, "heads": 8}  # 255 M weights, 1 GB
    assert SmallTextConfig(**{**big, "vocab_size": 1000}).parameters < MAX_PARAMETERS
    with pytest.raises(InvalidInputError, match="over the limit"):
        SmallTextConfig(**big)


@pytest.mark.parametrize(("sizes", "words"), [
    ({"heads": 0}, "text.heads must be between 1 and 64, not 0"),  # was ZeroDivisionError
    ({"vocab_size": 10**7}, "text.vocab_size must be between 1 and 262144"),
    ({"dim": "32"}, "'text.dim' expects int, got '32'"),
])
def test_a_recipe_text_section_is_checked_by_the_same_config(sizes, words):
    from gambar.train.recipe import text_section

    with pytest.raises(InvalidInputError, match=re.escape(words)):
        text_section({"kind": "small", **sizes}, "small")
