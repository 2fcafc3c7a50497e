"""Checkpoints: exact round trip, integrity checks, atomicity, no pickle; fsutil's atomic writes."""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gambar.train.checkpoint as ckpt_module
from gambar.errors import CorruptFileError, InvalidInputError
from gambar.fsutil import atomic_write_bytes, atomic_write_text, current_dir, replace_dir
from gambar.train.checkpoint import (
    CheckpointState,
    capture_rng,
    checkpoint_dir,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from gambar.train.ema import ema_update, make_ema


class Tied(nn.Module):
    """Embedding and output layer sharing one weight, plus a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.out = nn.Linear(3, 5, bias=False)
        self.out.weight = self.embed.weight
        self.norm = nn.BatchNorm1d(3)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.embed(idx)))


Optimizers = dict[str, torch.optim.Optimizer]  # parameter group -> its optimizer


def _trained(seed: int = 0) -> tuple[nn.Module, nn.Module, Optimizers]:
    torch.manual_seed(seed)
    model = Tied()
    ema = make_ema(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.99))
    for _ in range(3):
        model(torch.tensor([0, 1, 2, 3])).square().mean().backward()
        opt.step()
        opt.zero_grad()
        ema_update(ema, model, 0.9)
    return model, ema, {"model": opt}


def _state(step: int = 3) -> CheckpointState:
    gen = torch.Generator().manual_seed(7)
    rng = {k: v.unsqueeze(0) for k, v in capture_rng(gen).items()}
    return CheckpointState(step, step, 1.5, 1, {"train": {"steps": 10}}, rng)


def _save(run_dir: Path, step: int = 3) -> tuple[nn.Module, nn.Module, Optimizers]:
    model, ema, opt = _trained()
    save_checkpoint(run_dir, _state(step), model, ema, opt)
    return model, ema, opt


def _fresh() -> tuple[nn.Module, nn.Module, Optimizers]:
    return _trained(seed=1)  # different weights and optimizer moments


def _assert_modules_equal(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_is_exact(tmp_path: Path) -> None:
    model, ema, opt = _save(tmp_path)
    model2, ema2, opt2 = _fresh()
    state = load_checkpoint(tmp_path, model2, ema2, opt2)
    assert (state.step, state.data_position, state.wall_time) == (3, 3, 1.5)
    assert state.recipe == {"train": {"steps": 10}}
    _assert_modules_equal(model, model2)
    _assert_modules_equal(ema, ema2)
    assert model2.out.weight is model2.embed.weight  # tying survives
    sd, sd2 = opt["model"].state_dict(), opt2["model"].state_dict()
    assert sd["param_groups"] == sd2["param_groups"]  # betas come back as a tuple
    for i in sd["state"]:
        for name, value in sd["state"][i].items():
            assert torch.equal(value, sd2["state"][i][name]), (i, name)


class TwoParts(nn.Module):
    """A generator and a discriminator, each with its own optimizer."""

    def __init__(self) -> None:
        super().__init__()
        self.g, self.d = nn.Linear(3, 3), nn.Linear(3, 1)


def _two_optimizers(seed: int) -> tuple[TwoParts, nn.Module, Optimizers]:
    torch.manual_seed(seed)
    model = TwoParts()
    opts = {"g": torch.optim.AdamW(model.g.parameters(), lr=1e-2),
            "d": torch.optim.AdamW(model.d.parameters(), lr=3e-2, betas=(0.5, 0.9))}
    for _ in range(2):
        for opt in opts.values():
            model.d(model.g(torch.ones(2, 3))).square().mean().backward()
            opt.step()
            model.zero_grad()
    return model, make_ema(model), opts


def test_every_optimizer_round_trips_under_its_group_s_name(tmp_path: Path) -> None:
    model, ema, opts = _two_optimizers(0)
    save_checkpoint(tmp_path, _state(), model, ema, opts)
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == [
        "ema.safetensors", "model.safetensors", "optimizer-d.json", "optimizer-d.safetensors",
        "optimizer-g.json", "optimizer-g.safetensors", "rng.safetensors", "state.json"]
    model2, ema2, opts2 = _two_optimizers(1)
    load_checkpoint(tmp_path, model2, ema2, opts2)
    _assert_modules_equal(model, model2)
    for name in opts:
        sd, sd2 = opts[name].state_dict(), opts2[name].state_dict()
        assert sd["param_groups"] == sd2["param_groups"], name
        for i in sd["state"]:
            for key, value in sd["state"][i].items():
                assert torch.equal(value, sd2["state"][i][key]), (name, i, key)


def test_other_parameter_groups_than_the_checkpoint_s_are_a_one_line_error(tmp_path: Path
                                                                           ) -> None:
    model, ema, opts = _two_optimizers(0)
    save_checkpoint(tmp_path, _state(), model, ema, opts)
    fresh, fresh_ema, _ = _two_optimizers(1)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    one = {"model": torch.optim.AdamW(fresh.parameters())}
    with pytest.raises(InvalidInputError, match="parameter groups d, g; this recipe's model has "
                                                "model") as err:
        load_checkpoint(tmp_path, fresh, fresh_ema, one)
    assert "\n" not in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())  # untouched
    with pytest.raises(InvalidInputError, match="parameter groups model; this recipe's model "
                                                "has d, g"):
        _save(tmp_path / "single")
        load_checkpoint(tmp_path / "single", *_two_optimizers(1))


def test_rng_round_trip_replays_every_stream(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(11)
    torch.manual_seed(12)
    random.seed(13)
    np.random.seed(14)
    np.random.randn()  # leaves a cached gaussian in numpy's legacy state
    saved = {k: v.unsqueeze(0) for k, v in capture_rng(gen).items()}
    expected = (torch.rand(3, generator=gen), torch.rand(3), random.random(), np.random.randn())
    restore_rng(saved, gen)
    got = (torch.rand(3, generator=gen), torch.rand(3), random.random(), np.random.randn())
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])
    assert expected[2:] == got[2:]


def test_flipped_byte_is_caught_and_named(tmp_path: Path) -> None:
    _save(tmp_path)
    path = tmp_path / "checkpoint" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    model, ema, opt = _fresh()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CorruptFileError, match=r"model\.safetensors is corrupt"):
        load_checkpoint(tmp_path, model, ema, opt)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


def test_truncated_file_is_caught_and_named(tmp_path: Path) -> None:
    _save(tmp_path)
    path = tmp_path / "checkpoint" / "optimizer.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptFileError, match=r"optimizer\.safetensors is corrupt") as err:
        load_checkpoint(tmp_path, *_fresh())
    assert "\n" not in str(err.value)


def test_edited_state_json_is_caught(tmp_path: Path) -> None:
    _save(tmp_path)
    path = tmp_path / "checkpoint" / "state.json"
    path.write_text(path.read_text().replace('"step": 3', '"step": 4'))
    with pytest.raises(CorruptFileError, match=r"state\.json is corrupt"):
        load_checkpoint(tmp_path, *_fresh())
    path.write_text("{not json")
    with pytest.raises(CorruptFileError, match=r"state\.json is corrupt"):
        load_checkpoint(tmp_path, *_fresh())


def test_missing_file_is_caught(tmp_path: Path) -> None:
    _save(tmp_path)
    (tmp_path / "checkpoint" / "rng.safetensors").unlink()
    with pytest.raises(CorruptFileError, match=r"rng\.safetensors is missing"):
        load_checkpoint(tmp_path, *_fresh())


def test_checkpoint_for_another_model_is_a_one_line_error(tmp_path: Path) -> None:
    _save(tmp_path)
    other = nn.Linear(2, 2)
    with pytest.raises(InvalidInputError, match="does not fit") as err:
        load_checkpoint(tmp_path, other, make_ema(other),
                        {"model": torch.optim.AdamW(other.parameters())})
    assert "\n" not in str(err.value)


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path: Path, monkeypatch) -> None:
    model, _, _ = _save(tmp_path, step=3)
    real_save, calls = ckpt_module.save_file, []

    def dies_midway(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 3:  # model and EMA written, then the "disk fills up"
            raise OSError("No space left on device")
        real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(ckpt_module, "save_file", dies_midway)
    new_model, new_ema, new_opt = _fresh()
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(tmp_path, _state(step=6), new_model, new_ema, new_opt)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # temp dir cleaned up
    loaded, ema, opt = _fresh()
    assert load_checkpoint(tmp_path, loaded, ema, opt).step == 3
    _assert_modules_equal(model, loaded)


def test_crash_between_renames_keeps_the_old_checkpoint_usable(tmp_path: Path) -> None:
    _save(tmp_path, step=3)
    # What replace_dir leaves if the process dies after moving the old one aside.
    os.rename(tmp_path / "checkpoint", tmp_path / ".checkpoint.old")
    assert checkpoint_dir(tmp_path) == tmp_path / ".checkpoint.old"
    assert load_checkpoint(tmp_path, *_fresh()).step == 3
    model, ema, opt = _trained()
    save_checkpoint(tmp_path, _state(step=6), model, ema, opt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert load_checkpoint(tmp_path, *_fresh()).step == 6


def test_no_pickle_anywhere(tmp_path: Path, monkeypatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used")

    for name in ("dump", "dumps", "load", "loads", "Pickler", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "save", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    _save(tmp_path)
    load_checkpoint(tmp_path, *_fresh())
    files = sorted(p.name for p in (tmp_path / "checkpoint").iterdir())
    assert files == [
        "ema.safetensors",
        "model.safetensors",
        "optimizer.json",
        "optimizer.safetensors",
        "rng.safetensors",
        "state.json",
    ]
    for path in (tmp_path / "checkpoint").iterdir():
        data = path.read_bytes()
        if path.suffix == ".json":
            json.loads(data)
        else:  # safetensors: 8-byte little-endian header length, then a JSON header
            header_len = int.from_bytes(data[:8], "little")
            json.loads(data[8 : 8 + header_len])
        assert not data.startswith(b"\x80")  # pickle protocol marker
        assert b"PK\x03\x04" not in data[:4]  # torch.save's zip container


# ------------------------------------------------------------------------------- forgeries


def _forge(ckpt: Path, body: object = None, **files: bytes) -> None:
    """Rewrite checkpoint files as a forger would: consistent hashes and checksum, so only a
    check of what the fields and tensors hold can refuse them. `body` edits state.json."""
    for name, data in files.items():
        (ckpt / name.replace("_", ".", 1)).write_bytes(data)
    state = json.loads((ckpt / "state.json").read_text())
    state.pop("checksum")
    state["files"] = {name: ckpt_module._sha256(ckpt / name) for name in state["files"]}
    if callable(body):
        state = body(state)
    if isinstance(state, dict):
        state["checksum"] = ckpt_module._body_checksum(state)
    (ckpt / "state.json").write_text(json.dumps(state))


def _tensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata={"format": ckpt_module.FORMAT})


def _edit(**fields: object):
    return lambda state: {**state, **fields}


def _poisoned_weights(ckpt: Path) -> bytes:
    from safetensors.torch import load_file

    weights = load_file(ckpt / "model.safetensors")
    weights["norm.running_mean"] = torch.full_like(weights["norm.running_mean"], math.nan)
    return _tensors_bytes(weights)


def _short_rng(ckpt: Path) -> bytes:
    from safetensors.torch import load_file

    rng = load_file(ckpt / "rng.safetensors")
    rng["torch"] = rng["torch"][:, :10].contiguous()
    return _tensors_bytes(rng)


def _bad_python_rng(ckpt: Path) -> bytes:
    from safetensors.torch import load_file

    rng = load_file(ckpt / "rng.safetensors")
    rng["python"] = torch.full_like(rng["python"], -7)  # no Mersenne Twister has this state
    return _tensors_bytes(rng)


def _moments_of_another_shape(ckpt: Path) -> bytes:
    from safetensors.torch import load_file

    opt = load_file(ckpt / "optimizer.safetensors")
    opt["state.0.exp_avg"] = torch.zeros(2, 2)
    return _tensors_bytes(opt)


FORGERIES = {
    "step -5": lambda c: _forge(c, _edit(step=-5)),
    "step past its recipe's steps": lambda c: _forge(c, _edit(step=11)),
    "step a string": lambda c: _forge(c, _edit(step="3")),
    "step true": lambda c: _forge(c, _edit(step=True)),
    "data_position -1": lambda c: _forge(c, _edit(data_position=-1)),
    "world_size 0": lambda c: _forge(c, _edit(world_size=0)),
    "wall_time NaN": lambda c: _forge(c, _edit(wall_time=math.nan)),
    "recipe a list": lambda c: _forge(c, _edit(recipe=[1])),
    "recipe nested 900 deep": lambda c: _forge(c, lambda s: {**s, "recipe": {
        "train": {"steps": 10}, "x": json.loads("{\"a\": " * 900 + "1" + "}" * 900)}}),
    "recipe steps a string": lambda c: _forge(c, _edit(recipe={"train": {"steps": "10"}})),
    "files missing one": lambda c: _forge(c, lambda s: {**s, "files": {
        k: v for k, v in s["files"].items() if k != "rng.safetensors"}}),
    "files naming another": lambda c: _forge(
        c, lambda s: {**s, "files": {**s["files"], "../../x": "0"}}),
    "files with half an optimizer": lambda c: _forge(c, lambda s: {**s, "files": {
        k: v for k, v in s["files"].items() if k != "optimizer.json"}}),
    "files naming a group's optimizer twice": lambda c: _forge(c, lambda s: {**s, "files": {
        **s["files"], "optimizer-model.json": "0", "optimizer-model.safetensors": "0"}}),
    "state.json holds []": lambda c: (c / "state.json").write_text("[]"),
    "state.json holds null": lambda c: (c / "state.json").write_text("null"),
    "state.json holds a list with a checksum": lambda c: _forge(c, lambda s: [s]),
    "state.json deeply nested": lambda c: (c / "state.json").write_text("[" * 100_000),
    "NaN weights": lambda c: _forge(c, model_safetensors=_poisoned_weights(c)),
    "RNG state cut short": lambda c: _forge(c, rng_safetensors=_short_rng(c)),
    "RNG state impossible": lambda c: _forge(c, rng_safetensors=_bad_python_rng(c)),
    "optimizer.json holds []": lambda c: _forge(c, optimizer_json=b"[]"),
    "optimizer betas a string": lambda c: _forge(c, optimizer_json=json.dumps({
        **json.loads((c / "optimizer.json").read_text()),
        "param_groups": [{**json.loads((c / "optimizer.json").read_text())["param_groups"][0],
                          "betas": "high"}]}).encode()),
    "optimizer tensor named oddly": lambda c: _forge(
        c, optimizer_safetensors=_tensors_bytes({"state": torch.zeros(1)})),
    "optimizer moments of another shape": lambda c: _forge(
        c, optimizer_safetensors=_moments_of_another_shape(c)),
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_checkpoint_is_a_one_line_corrupt_file_error(tmp_path: Path,
                                                              forgery: str) -> None:
    """Hashes and checksum are consistent (anyone can compute them), the content is not: the
    load refuses it with a CorruptFileError, never a TypeError, and never trains on it."""
    _save(tmp_path)
    FORGERIES[forgery](tmp_path / "checkpoint")
    model, ema, opt = _fresh()
    with pytest.raises(CorruptFileError) as err:
        state = load_checkpoint(tmp_path, model, ema, opt)
        restore_rng(state.rng, torch.Generator())  # what the loop does next with a loaded one
    assert "\n" not in str(err.value)


def test_a_forged_checkpoint_leaves_the_model_untouched(tmp_path: Path) -> None:
    _save(tmp_path)
    ckpt = tmp_path / "checkpoint"
    _forge(ckpt, model_safetensors=_poisoned_weights(ckpt))
    model, ema, opt = _fresh()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CorruptFileError, match=r"model\.safetensors holds NaN or inf"):
        load_checkpoint(tmp_path, model, ema, opt)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_forging_helper_keeps_a_valid_checkpoint_valid(tmp_path: Path) -> None:
    """The forgeries above fail for what they change, not for how _forge rewrites files."""
    model, _, _ = _save(tmp_path)
    _forge(tmp_path / "checkpoint", _edit(step=5))
    loaded, ema, opt = _fresh()
    state = load_checkpoint(tmp_path, loaded, ema, opt)
    restore_rng(state.rng, torch.Generator())
    assert state.step == 5
    _assert_modules_equal(model, loaded)


def test_nonfinite_tensor_names_the_first_bad_one() -> None:
    model, ema, opt = _trained()
    assert ckpt_module.nonfinite_tensor(model, ema, opt) is None
    with torch.no_grad():
        ema.embed.weight[1, 2] = math.inf
    assert ckpt_module.nonfinite_tensor(model, ema, opt) == "EMA weight 'embed.weight'"
    opt["model"].state[model.embed.weight]["exp_avg_sq"][0, 0] = math.nan
    model2, ema2, _ = _trained()
    assert ckpt_module.nonfinite_tensor(model2, ema2, opt) == "optimizer state 'state.0.exp_avg_sq'"


def test_optimizer_tensors_are_flattened_with_readable_keys(tmp_path: Path) -> None:
    _save(tmp_path)
    from safetensors.torch import load_file

    keys = set(load_file(tmp_path / "checkpoint" / "optimizer.safetensors"))
    assert {"state.0.exp_avg", "state.0.exp_avg_sq", "state.0.step"} <= keys
    groups = json.loads((tmp_path / "checkpoint" / "optimizer.json").read_text())["param_groups"]
    assert groups[0]["betas"] == [0.8, 0.99] and groups[0]["lr"] == 1e-2


# ------------------------------------------------------------------------------- fsutil


def test_atomic_write_replaces_and_refuses(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    with pytest.raises(InvalidInputError, match="already exists"):
        atomic_write_bytes(path, b"three", overwrite=False)
    assert path.read_text() == "two"
    atomic_write_bytes(tmp_path / "new.bin", b"\x00\x01", overwrite=False)
    assert (tmp_path / "new.bin").read_bytes() == b"\x00\x01"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.bin", "out.txt"]


def test_atomic_write_failure_keeps_old_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk died")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk died"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # temp file removed


def test_replace_dir_swaps_whole_directories(tmp_path: Path) -> None:
    dst, new = tmp_path / "model", tmp_path / "new"
    dst.mkdir()
    (dst / "a").write_text("old")
    new.mkdir()
    (new / "b").write_text("new")
    replace_dir(new, dst)
    assert [p.name for p in dst.iterdir()] == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert current_dir(dst) == dst and current_dir(tmp_path / "none") is None
