"""The shared loop with several parameter groups: the toy family's GAN (tests/toy_family), two
optimisers with their own settings, EMA on the generator only, named losses, exact resume."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from gambar.config import apply_overrides
from gambar.errors import InvalidInputError
from gambar.train.checkpoint import SINGLE_GROUP, is_checkpoint_file
from gambar.train.ema import ema_scope, ema_update, make_ema
from gambar.train.loop import train
from gambar.train.recipe import OverrideSchema, train_config
from gambar.train.task import Update
from helpers_train import assert_same_run, gan_recipe, launch_two_ranks, run_log
from toy_family.task import ToyTask


def _optimizer_json(run: Path, group: str) -> dict[str, Any]:
    return json.loads((run / "checkpoint" / f"optimizer-{group}.json").read_text())


def test_an_interrupted_two_optimiser_run_resumes_bit_identical(tmp_path: Path) -> None:
    full, split = tmp_path / "full", tmp_path / "split"
    train(ToyTask, gan_recipe(full, steps=6), progress=False)
    train(ToyTask, gan_recipe(split, steps=3), progress=False)
    assert json.loads((split / "checkpoint" / "state.json").read_text())["step"] == 3
    train(ToyTask, gan_recipe(split, steps=6), resume=True, progress=False)
    assert_same_run(full, split)  # weights, EMA, both optimisers' states, RNG, export, log
    assert sorted(p.name for p in (full / "checkpoint").iterdir()) == [
        "ema.safetensors", "model.safetensors", "optimizer-d.json", "optimizer-d.safetensors",
        "optimizer-g.json", "optimizer-g.safetensors", "rng.safetensors", "state.json"]
    moments = load_file(full / "checkpoint" / "optimizer-d.safetensors")
    assert int(moments["state.0.step"]) == 6  # each optimiser stepped once per step


@pytest.mark.slow
def test_two_gloo_processes_resume_a_two_optimiser_run_bit_identical(tmp_path: Path) -> None:
    """Each DDP step runs two forward/backward passes, each leaving one part's parameters
    without gradient (find_unused_parameters): the ranks stay in sync and resume exactly."""
    launch_two_ranks(tmp_path / "full", tmp_path / "out_full", steps=4, mode="gan")
    ranks = [load_file(tmp_path / "out_full" / f"rank{r}.safetensors") for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    launch_two_ranks(tmp_path / "split", tmp_path / "out_a", steps=2, mode="gan")
    launch_two_ranks(tmp_path / "split", tmp_path / "out_b", steps=4, mode="gan-resume")
    assert_same_run(tmp_path / "full", tmp_path / "split")
    state = json.loads((tmp_path / "full" / "checkpoint" / "state.json").read_text())
    assert state["world_size"] == 2


def test_a_group_s_own_settings_take_effect(tmp_path: Path) -> None:
    run = tmp_path / "run"
    recipe = gan_recipe(run, steps=2, lr=1e-3, optimizers={"d": {"lr": 3e-3, "betas": [0.1, 0.2],
                                                                 "weight_decay": 0.05}})
    train(ToyTask, recipe, progress=False)
    d, g = (_optimizer_json(run, group)["param_groups"][0] for group in ("d", "g"))
    assert (d["lr"], d["betas"], d["weight_decay"]) == (3e-3, [0.1, 0.2], 0.05)
    assert (g["lr"], g["betas"], g["weight_decay"]) == (1e-3, [0.5, 0.99], 0.0)  # [train]'s
    assert [(r["lr/d"], r["lr/g"], r["lr"]) for r in run_log(run)] == [(3e-3, 1e-3, 1e-3)] * 2


def test_a_group_s_schedule_is_its_own(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(ToyTask, gan_recipe(run, steps=4, lr=1e-3, optimizers={"d": {"warmup_steps": 4}}),
          progress=False)
    assert [r["lr/d"] for r in run_log(run)] == [2.5e-4, 5e-4, 7.5e-4, 1e-3]
    assert [r["lr/g"] for r in run_log(run)] == [1e-3] * 4


@pytest.mark.parametrize(("optimizers", "message"), [
    ({"dd": {"lr": 1e-3}}, r"\[train.optimizers.dd\] names no parameter group of this family; "
                           r"did you mean 'd'\? its groups are g, d"),
    ({"d": {"lrr": 1e-3}}, r"unknown key 'train.optimizers.d.lrr'"),
    ({"d": {"lr": 5.0}}, r"train.optimizers.d.lr must be in \(0, 1\], got 5.0"),
    ({"d": {"warmup_steps": 5, "decay_steps": 3}},
     r"train.optimizers.d.warmup_steps \+ train.optimizers.d.decay_steps \(5 \+ 3\)"),
    ({"d": "fast"}, r"\[train.optimizers.d\] must be a table"),
])
def test_a_misspelt_group_or_setting_is_a_one_line_error_before_training(
    tmp_path: Path, optimizers: dict[str, Any], message: str
) -> None:
    run = tmp_path / "run"
    with pytest.raises(InvalidInputError, match=message) as err:
        train(ToyTask, gan_recipe(run, optimizers=optimizers), progress=False)
    assert "\n" not in str(err.value)
    assert not run.exists()


def test_set_reaches_a_group_s_table() -> None:
    """`--set train.optimizers.d.lr=...` on a recipe without that table (gambar train builds
    its schema with OverrideSchema)."""
    schema = OverrideSchema(ToyTask.SCHEMA)
    recipe = apply_overrides({"family": "toy"}, ["train.optimizers.d.lr=1e-4",
                                                 "train.optimizers.d.betas=[0.5, 0.9]"], schema)
    cfg = train_config(recipe)
    assert (cfg.group("d").lr, cfg.group("d").betas, cfg.group("g").lr) == (1e-4, (0.5, 0.9),
                                                                          cfg.lr)
    with pytest.raises(InvalidInputError, match="unknown key 'train.optimizers.d.lrr'"):
        apply_overrides({}, ["train.optimizers.d.lrr=1"], schema)
    with pytest.raises(InvalidInputError, match="'train.optimizers.d.lr' expects float"):
        apply_overrides({}, ["train.optimizers.d.lr=fast"], schema)


def test_ema_averages_the_generator_and_exports_the_live_discriminator(tmp_path: Path) -> None:
    import gambar

    run = tmp_path / "run"
    model_dir = train(ToyTask, gan_recipe(run, steps=4, ema_decay=0.9), progress=False)
    live = load_file(run / "checkpoint" / "model.safetensors")
    ema = load_file(run / "checkpoint" / "ema.safetensors")
    for name in live:
        same = torch.equal(live[name], ema[name])
        assert same == name.startswith("discriminator."), name
    pipe = gambar.load(model_dir)
    exported = {f"{part}.{k}": v for part, module in pipe.components().items()
                for k, v in module.state_dict().items()}
    assert exported.keys() == live.keys()
    for name in live:
        assert torch.equal(exported[name], live[name] if name.startswith("discriminator.")
                           else ema[name]), name


def test_the_log_has_each_group_s_loss_and_the_task_s_figures(tmp_path: Path) -> None:
    run = tmp_path / "run"
    model_dir = train(ToyTask, gan_recipe(run, steps=4, log_every=2), progress=False)
    lines = run_log(run)
    assert [line["step"] for line in lines] == [2, 4]
    for line in lines:
        assert list(line) == ["step", "loss", "loss/g", "loss/d", "d_fake", "d_real", "lr",
                              "lr/g", "lr/d", "time"]
        assert line["loss"] == line["loss/g"] + line["loss/d"]
        assert 0 < line["d_real"] < 1 and 0 < line["d_fake"] < 1
    summary = json.loads((model_dir / "config.json").read_text())["training"]
    assert summary["final_loss"] == lines[-1]["loss"]


def test_the_progress_bar_shows_the_named_losses(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    train(ToyTask, gan_recipe(tmp_path / "run", steps=2), progress=True)
    bar = capsys.readouterr().err
    assert re.search(r"g=[-\d.e]+, d=[-\d.e]+, d_fake=[-\d.e]+, d_real=[-\d.e]+", bar), bar


def test_resuming_with_other_parameter_groups_is_a_one_line_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(ToyTask, gan_recipe(run, steps=3, optimizers={}), progress=False)

    class OneGroup(ToyTask):
        def param_groups(self, model: nn.Module) -> dict[str, list[nn.Parameter]]:
            return {SINGLE_GROUP: list(model.parameters())}

        def step(self, model, batch, generator, step):
            for update in super().step(model, batch, generator, step):
                yield Update(SINGLE_GROUP, update.loss)

    with pytest.raises(InvalidInputError, match="optimizers of parameter groups d, g; this "
                                                "recipe's model has model") as err:
        train(OneGroup, gan_recipe(run, steps=6, optimizers={}), resume=True, progress=False)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------- a family's mistakes


class Overlapping(ToyTask):
    def param_groups(self, model):
        return {"g": list(model.generator.parameters()), "d": list(model.parameters())}


class Missing(ToyTask):
    def param_groups(self, model):
        return {"g": list(model.generator.parameters())}


class Frozen(Missing):
    """The discriminator frozen: leaving it out of every group is then right."""

    def __init__(self, recipe):
        super().__init__(recipe)
        self.model.discriminator.requires_grad_(False)

    def step(self, model, batch, generator, step):
        for update in super().step(model, batch, generator, step):
            if update.group == "g":
                yield update


class Stranger(ToyTask):
    def ema_target(self, model):
        return nn.Linear(2, 2)


class Unknown(ToyTask):
    def step(self, model, batch, generator, step):
        for update in super().step(model, batch, generator, step):
            yield update._replace(group="x")


@pytest.mark.parametrize(("factory", "message"), [
    (Overlapping, r"parameter 'generator.text.weight' is in parameter groups 'g' and 'd'"),
    (Missing, r"trainable parameter 'discriminator.text.weight' is in no parameter group"),
    (Stranger, r"the EMA target Linear is not a submodule"),
    (Unknown, r"yielded an update of parameter group 'x'; its param_groups are g, d"),
])
def test_a_family_s_inconsistent_groups_are_its_bug(tmp_path: Path, factory: Any,
                                                    message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train(factory, gan_recipe(tmp_path / "run", steps=1), progress=False)


def test_a_frozen_part_may_be_in_no_group(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(Frozen, gan_recipe(run, steps=2, optimizers={}), progress=False)
    assert sorted(p.name for p in (run / "checkpoint").glob("optimizer*")) == [
        "optimizer-g.json", "optimizer-g.safetensors"]
    assert list(run_log(run)[-1])[:3] == ["step", "loss", "loss/g"]


def test_a_nan_loss_names_its_group(tmp_path: Path) -> None:
    class Poisoned(ToyTask):
        def step(self, model, batch, generator, step):
            for update in super().step(model, batch, generator, step):
                bad = step == 1 and update.group == "d"
                yield update._replace(loss=update.loss * float("nan")) if bad else update

    from gambar.errors import GambarError

    with pytest.raises(GambarError, match=r"diverged at step 2: the loss is nan \(parameter "
                                          r"group 'd'\).*lower train.optimizers.d.lr \(now "
                                          r"0.004\)"):
        train(Poisoned, gan_recipe(tmp_path / "run"), progress=False)


# ------------------------------------------------------------------------------- EMA scope


def test_ema_update_averages_only_its_scope_and_copies_the_rest() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    ema = make_ema(model)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1][1].running_mean.fill_(3.0)
    scope = ema_scope(model, model[1])
    assert scope == "1"
    ema_update(ema, model, 0.5, scope)
    live = model.state_dict()
    for name, value in ema.state_dict().items():
        if name.startswith("1.") and name in dict(model.named_parameters()):
            torch.testing.assert_close(value, 0.5 * before[name] + 0.5 * live[name])
        else:  # the other part's weights and every buffer: the live values exactly
            assert torch.equal(value, live[name]), name
    assert ema_scope(model, model) == "" and ema_scope(model, None) is None
    ema_update(ema, model, 0.5, None)  # no EMA at all: a copy
    assert all(torch.equal(v, live[k]) for k, v in ema.state_dict().items())


def test_group_checkpoint_files_are_recognised_as_a_run_s_leftovers(tmp_path: Path) -> None:
    """A run killed while writing its first checkpoint may restart over its debris."""
    assert all(map(is_checkpoint_file, ["optimizer-d.json", "optimizer-g.safetensors",
                                        "optimizer.json", "state.json"]))
    assert not any(map(is_checkpoint_file, ["optimizer-model.json", "optimizer-D.json",
                                            "notes.txt", "optimizer-.json"]))
    run = tmp_path / "run"
    (run / ".checkpoint.tmp").mkdir(parents=True)
    (run / ".checkpoint.tmp" / "optimizer-d.safetensors").write_bytes(b"half")
    (run / ".model.tmp").mkdir()
    (run / ".model.tmp" / "generator.safetensors").write_bytes(b"half")
    train(ToyTask, gan_recipe(run, steps=1), progress=False)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint", "log.jsonl", "model"]
