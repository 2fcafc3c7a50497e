"""Recipe files, `--set` overrides and dataclass sections."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from gambar.config import apply_overrides, dataclass_from_dict, load_recipe, parse_value
from gambar.errors import CorruptFileError, InvalidInputError
from gambar.train.recipe import TrainConfig, train_config


@dataclass(frozen=True)
class ModelConfig:
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 4)
    dropout: float = 0.0
    attention: Literal["none", "cross"] = "cross"
    name: str = "unet"
    pair: tuple[int, float] = (1, 0.5)
    shape: tuple[tuple[int, int], ...] = ((1, 2),)
    note: str | None = None


RECIPE = {
    "family": "diffusion",
    "train": {"lr": 1e-4, "steps": 100, "run_dir": "runs/a"},
    "model": {"base_channels": 64, "channel_mults": [1, 2]},
}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("3e-4", 3e-4),
        ("96", 96),
        ("true", True),
        ("[1, 2]", [1, 2]),
        ('"a b"', "a b"),
        ("abc", "abc"),
        ("runs/x", "runs/x"),
        ("-1.5", -1.5),
    ],
)
def test_parse_value_reads_toml_literals(raw: str, expected: object) -> None:
    value = parse_value(raw)
    assert value == expected and type(value) is type(expected)


def test_overrides_parse_and_coerce() -> None:
    out = apply_overrides(
        RECIPE,
        [
            "train.lr=3e-4",
            "model.base_channels=96",
            "train.steps=7",
            "model.channel_mults=[1, 2, 2]",
            "train.run_dir=123",
        ],
    )
    assert out["train"]["lr"] == 3e-4 and out["model"]["base_channels"] == 96
    assert out["train"]["steps"] == 7 and out["model"]["channel_mults"] == [1, 2, 2]
    assert out["train"]["run_dir"] == "123"  # a string key takes the text as typed
    assert apply_overrides(RECIPE, ["train.lr=1"])["train"]["lr"] == 1.0  # int where float
    assert RECIPE["train"]["lr"] == 1e-4  # the input is not mutated


def test_override_type_mismatch_is_an_error() -> None:
    with pytest.raises(InvalidInputError, match="'train.steps' expects int, got 'abc'"):
        apply_overrides(RECIPE, ["train.steps=abc"])
    with pytest.raises(InvalidInputError, match="is a section"):
        apply_overrides(RECIPE, ["model=3"])


def test_unknown_override_key_names_the_valid_ones() -> None:
    with pytest.raises(InvalidInputError) as err:
        apply_overrides(RECIPE, ["train.lrr=1"])
    assert str(err.value) == "unknown key 'train.lrr'; valid keys there: lr, run_dir, steps"
    with pytest.raises(InvalidInputError, match="unknown key 'optim.lr'"):
        apply_overrides(RECIPE, ["optim.lr=1"])


def test_schema_admits_fields_the_recipe_left_to_defaults() -> None:
    schema = {"train": TrainConfig, "model": ModelConfig}
    out = apply_overrides(RECIPE, ["train.ema_decay=0.99", "model.dropout=0"], schema)
    assert out["train"]["ema_decay"] == 0.99 and out["model"]["dropout"] == 0.0
    out = apply_overrides({"family": "x"}, ["train.mixed_precision=bf16"], schema)
    assert out["train"] == {"mixed_precision": "bf16"}
    with pytest.raises(InvalidInputError, match="ema_decay"):  # the hint lists schema fields
        apply_overrides(RECIPE, ["train.ema_decy=0.9"], schema)
    with pytest.raises(InvalidInputError, match="must be one of"):
        apply_overrides(RECIPE, ["train.mixed_precision=fp16"], schema)


def test_malformed_override_is_an_error() -> None:
    for bad in ("train.lr", "=3", "train..lr=1"):
        with pytest.raises(InvalidInputError, match="section.key=value"):
            apply_overrides(RECIPE, [bad])


def test_dataclass_from_dict_checks_and_converts() -> None:
    cfg = dataclass_from_dict(
        ModelConfig, {"channel_mults": [1, 2], "dropout": 0, "pair": [2, 1], "shape": [[3, 4]]}
    )
    assert cfg.channel_mults == (1, 2) and cfg.dropout == 0.0 and type(cfg.dropout) is float
    assert cfg.pair == (2, 1.0) and cfg.shape == ((3, 4),)
    with pytest.raises(InvalidInputError) as err:
        dataclass_from_dict(ModelConfig, {"base_channel": 3}, section="model")
    assert str(err.value) == (
        "unknown key 'model.base_channel' for ModelConfig; valid keys: base_channels, "
        "channel_mults, dropout, attention, name, pair, shape, note"
    )
    with pytest.raises(InvalidInputError, match="'base_channels' expects int, got True"):
        dataclass_from_dict(ModelConfig, {"base_channels": True})
    with pytest.raises(InvalidInputError, match="expects 2 items"):
        dataclass_from_dict(ModelConfig, {"pair": [1, 2, 3]})
    with pytest.raises(InvalidInputError, match="must be one of 'none' | 'cross'"):
        dataclass_from_dict(ModelConfig, {"attention": "self"})
    assert dataclass_from_dict(ModelConfig, {"note": "hi"}).note == "hi"


def test_load_recipe(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('family = "toy"\n[train]\nsteps = 5\nlr = 3e-4\nbetas = [0.9, 0.95]\n')
    recipe = load_recipe(path)
    cfg = train_config(recipe)
    assert recipe["family"] == "toy" and cfg.steps == 5 and cfg.betas == (0.9, 0.95)
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_recipe(tmp_path / "missing.toml")
    path.write_text("[train\n")
    with pytest.raises(CorruptFileError, match="not valid TOML"):
        load_recipe(path)


def test_load_recipe_refuses_what_is_not_a_recipe_in_one_line(tmp_path: Path) -> None:
    """A directory, a huge file and nesting deep enough to exhaust the parser's recursion were
    a wrong message, a read of the whole file and a RecursionError traceback."""
    with pytest.raises(InvalidInputError, match="is not a file"):
        load_recipe(tmp_path)
    deep = tmp_path / "deep.toml"
    deep.write_text("v = " + "[" * 100_000 + "]" * 100_000)
    with pytest.raises(CorruptFileError, match="nested too deep"):
        load_recipe(deep)
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(InvalidInputError, match="over 1 MB"):
        load_recipe(big)
    latin = tmp_path / "latin.toml"
    latin.write_bytes('name = "caf\xe9"'.encode("latin-1"))
    with pytest.raises(CorruptFileError, match="not valid TOML"):
        load_recipe(latin)


def test_a_huge_wrong_value_is_quoted_short():
    """A 1 MB string where a number belongs gives a short one-line error, not a 1 MB line."""
    with pytest.raises(InvalidInputError) as err:
        dataclass_from_dict(TrainConfig, {"steps": "9" * 1_000_000}, section="train")
    assert "train.steps" in str(err.value) and len(str(err.value)) < 200
