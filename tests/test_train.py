"""The shared training loop: learning, exact resume, interruption, refusals, EMA, DDP."""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gambar.errors import GambarError, InvalidInputError
from gambar.train.ema import ema_update, make_ema
from gambar.train.loop import recipe_changes, train
from gambar.train.recipe import TrainConfig, lr_at, train_config
from helpers_train import (
    InterruptingToyTask,
    PoisonedToyTask,
    ToyTask,
    assert_same_run,
    assert_same_tensors,
    launch_two_ranks,
    run_log,
    toy_recipe,
)

TENSOR_FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors", "rng.safetensors")


def test_loss_falls_and_outputs_are_written(tmp_path: Path) -> None:
    recipe = toy_recipe(
        tmp_path / "run", steps=60, checkpoint_every=20, sample_every=20, log_every=10
    )
    run_dir = tmp_path / "run"
    assert train(ToyTask, recipe, progress=False) == run_dir / "model"
    log = run_log(run_dir)
    assert [r["step"] for r in log] == [10, 20, 30, 40, 50, 60]
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == [
        "step_000020.png",
        "step_000040.png",
        "step_000060.png",
    ]
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert config["steps"] == 60 and config["recipe"] == recipe
    assert math.isfinite(config["final_loss"])
    assert not any(p.name.startswith(".") for p in run_dir.iterdir())  # no temp debris


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    # log_every=1: a log window straddling the interruption would average fewer steps.
    train(ToyTask, toy_recipe(tmp_path / "full", steps=6, log_every=1), progress=False)
    split = tmp_path / "split"
    train(ToyTask, toy_recipe(split, steps=3, log_every=1), progress=False)
    assert json.loads((split / "checkpoint" / "state.json").read_text())["step"] == 3
    train(ToyTask, toy_recipe(split, steps=6, log_every=1), resume=True, progress=False)
    assert_same_run(tmp_path / "full", split)


def test_interrupt_saves_a_checkpoint_that_resumes_exactly(tmp_path: Path) -> None:
    train(ToyTask, toy_recipe(tmp_path / "full", steps=6, log_every=1), progress=False)
    run = tmp_path / "interrupted"
    recipe = toy_recipe(run, steps=6, checkpoint_every=100, log_every=1)
    with pytest.raises(KeyboardInterrupt):
        train(lambda r: InterruptingToyTask(r, at_call=3), recipe, progress=False)
    # The signal arrived during step 4 (index 3); that step completes, then the loop saves.
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 4
    assert not (run / "model").exists()
    train(ToyTask, recipe, resume=True, progress=False)
    assert_same_run(tmp_path / "full", run)


def test_sample_grids_do_not_perturb_training(tmp_path: Path) -> None:
    with_samples = train(ToyTask, toy_recipe(tmp_path / "a", sample_every=1), progress=False).parent
    without = train(ToyTask, toy_recipe(tmp_path / "b", sample_every=0), progress=False).parent
    assert len(list((with_samples / "samples").iterdir())) == 6
    assert not (without / "samples").exists()
    for name in TENSOR_FILES:
        assert_same_tensors(
            load_file(with_samples / "checkpoint" / name), load_file(without / "checkpoint" / name)
        )


def test_resume_of_a_missing_run_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        train(ToyTask, toy_recipe(tmp_path / "run"), resume=True, progress=False)
    assert not (tmp_path / "run").exists()


def _killed_before_first_checkpoint(run_dir: Path) -> None:
    """What a run killed (kill -9) before its first checkpoint leaves: logs, samples, debris."""
    (run_dir / "samples").mkdir(parents=True)
    (run_dir / "samples" / "step_000003.png").write_bytes(b"png")
    (run_dir / "samples" / ".step_000006.png.x1y2z3_4.tmp").write_bytes(b"half")
    (run_dir / "log.jsonl").write_text('{"step": 2, "loss": 9.0}\n{"step": 4, "lo')
    (run_dir / ".log.jsonl.a1b2c3d4.tmp").write_text('{"step": 2')
    (run_dir / ".checkpoint.tmp").mkdir()
    (run_dir / ".checkpoint.tmp" / "model.safetensors").write_bytes(b"half")
    (run_dir / ".checkpoint.tmp" / ".state.json.a1b2c3d4.tmp").write_text("{")
    (run_dir / ".model.tmp").mkdir()
    (run_dir / ".model.tmp" / "config.json").write_text("{")


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_killed_before_its_first_checkpoint_restarts_from_step_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], resume: bool
) -> None:
    """Fresh or --resume, the directory is accepted; the run starts from step 0, replaces the
    leftovers, equals a run in an empty directory, and one line says which happened."""
    train(ToyTask, toy_recipe(tmp_path / "clean", log_every=1), progress=False)
    run = tmp_path / "killed"
    _killed_before_first_checkpoint(run)
    capsys.readouterr()
    train(ToyTask, toy_recipe(run, log_every=1), resume=resume, progress=False)
    note = capsys.readouterr().err.strip().splitlines()
    expected = ("no checkpoint .* starting from step 0 and replacing its logs/samples"
                if resume else "starting afresh and replacing them")
    assert len(note) == 1 and re.search(expected, note[0]), note
    assert_same_run(tmp_path / "clean", run)
    assert [r["step"] for r in run_log(run)] == [1, 2, 3, 4, 5, 6]  # the stale lines are gone
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step_000003.png", "step_000006.png"]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint", "log.jsonl", "model", "samples"]


def test_a_dir_with_other_files_and_no_checkpoint_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _killed_before_first_checkpoint(run)
    (run / "notes.txt").write_text("mine")
    for resume in (False, True):
        with pytest.raises(GambarError, match=r"not empty and holds no checkpoint \(notes.txt\)"):
            train(ToyTask, toy_recipe(run), resume=resume, progress=False)
    assert (run / "notes.txt").read_text() == "mine" and (run / "log.jsonl").exists()


def _write(path: Path, text: str = "mine") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _tree(root: Path) -> dict[str, str]:
    """Every path under `root` (links not followed) with a file's text or a link's target."""
    return {str(p.relative_to(root)): (f"-> {os.readlink(p)}" if p.is_symlink()
                                       else p.read_text() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


# Entries named like a run's leftovers but not shaped like them, each with the entry the refusal
# names: they may be the user's, so a fresh start refuses rather than delete them.
FOREIGN = {
    "folder log.jsonl": ("log.jsonl", lambda run, out: _write(run / "log.jsonl" / "precious.txt")),
    "linked log.jsonl": ("log.jsonl", lambda run, out: (run / "log.jsonl").symlink_to(out / "a")),
    "folder .notes.tmp": (".notes.tmp", lambda run, out: _write(run / ".notes.tmp" / "draft.md")),
    "file .notes.tmp": (".notes.tmp", lambda run, out: _write(run / ".notes.tmp")),
    "samples/notes": ("samples", lambda run, out: _write(run / "samples" / "notes.txt")),
    "samples/folder": ("samples", lambda run, out: _write(run / "samples" / "step_1.png" / "x")),
    "linked samples": ("samples", lambda run, out: (run / "samples").symlink_to(out / "pngs")),
    "linked sample": ("samples", lambda run, out: _write(run / "samples" / "step_1.png")
                      or (run / "samples" / "step_2.png").symlink_to(out / "a")),
    ".checkpoint.tmp/mine": (".checkpoint.tmp",
                             lambda run, out: _write(run / ".checkpoint.tmp" / "mine.txt")),
    ".model.tmp/folder": (".model.tmp",
                          lambda run, out: _write(run / ".model.tmp" / "config.json" / "x")),
    "linked .model.tmp": (".model.tmp", lambda run, out: (run / ".model.tmp").symlink_to(out)),
}


@pytest.mark.parametrize("case", FOREIGN)
@pytest.mark.parametrize("resume", [False, True])
def test_entries_named_like_leftovers_but_shaped_otherwise_are_refused_not_deleted(
    tmp_path: Path, case: str, resume: bool
) -> None:
    """A fresh start used to delete whatever was *named* log.jsonl, samples or .*.tmp, whole:
    a folder log.jsonl/ of the user's files was wiped, and a linked samples/ was a traceback."""
    run, outside = tmp_path / "run", tmp_path / "outside"
    _write(outside / "a")  # what the links point at: the user's too
    _write(outside / "pngs" / "step_000001.png")
    _write(run / ".log.jsonl.a1b2c3d4.tmp")  # a real leftover beside it: not named, not deleted
    name, make = FOREIGN[case]
    make(run, outside)
    before = _tree(tmp_path)
    refusal = rf"not empty and holds no checkpoint \({re.escape(name)}\)"
    with pytest.raises(GambarError, match=refusal) as err:
        train(ToyTask, toy_recipe(run), resume=resume, progress=False)
    assert "\n" not in str(err.value)
    assert _tree(tmp_path) == before


def test_nonfinite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    """A NaN loss at step 5 (checkpoints every 3): a one-line error; the step-3 checkpoint is
    kept, no model is exported, and resuming from it equals a run that never went wrong."""
    train(ToyTask, toy_recipe(tmp_path / "full", log_every=1), progress=False)
    run = tmp_path / "nan"
    recipe = toy_recipe(run, log_every=1)
    with pytest.raises(GambarError) as err:
        train(lambda r: PoisonedToyTask(r, at_call=4), recipe, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert "diverged at step 5: the loss is nan" in message
    assert "last good checkpoint (step 3)" in message and "train.lr" in message
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 3
    assert not (run / "model").exists()
    assert all(math.isfinite(r["loss"]) for r in run_log(run))
    train(ToyTask, recipe, resume=True, progress=False)
    assert_same_run(tmp_path / "full", run)


def test_nonfinite_weights_are_never_checkpointed_or_exported(tmp_path: Path) -> None:
    """The last step's loss is finite but its update leaves a NaN weight: the final checkpoint
    and the export are refused, and the step-3 checkpoint stays."""
    run = tmp_path / "run"
    with pytest.raises(GambarError, match=r"diverged at step 6: weight '0.weight' is not finite"):
        train(lambda r: PoisonedToyTask(r, at_call=5, kind="weight"), toy_recipe(run),
              progress=False)
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 3
    weights = load_file(run / "checkpoint" / "model.safetensors")
    assert all(bool(torch.isfinite(t).all()) for t in weights.values())
    assert not (run / "model").exists()


def test_nan_before_the_first_checkpoint_says_none_was_written(tmp_path: Path) -> None:
    with pytest.raises(GambarError, match="step 1: the loss is nan.*no checkpoint was written"):
        train(lambda r: PoisonedToyTask(r, at_call=0), toy_recipe(tmp_path / "run"),
              progress=False)


def test_fresh_run_never_overwrites_an_existing_one(tmp_path: Path) -> None:
    recipe = toy_recipe(tmp_path / "run", steps=3)
    train(ToyTask, recipe, progress=False)
    before = (tmp_path / "run" / "checkpoint" / "model.safetensors").read_bytes()
    with pytest.raises(GambarError, match="--resume"):
        train(ToyTask, recipe, progress=False)
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").read_bytes() == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(GambarError, match="not empty"):
        train(ToyTask, toy_recipe(tmp_path / "other"), progress=False)


def test_resume_past_the_end_is_an_error(tmp_path: Path) -> None:
    train(ToyTask, toy_recipe(tmp_path / "run", steps=6), progress=False)
    with pytest.raises(InvalidInputError, match="past train.steps=3"):
        train(ToyTask, toy_recipe(tmp_path / "run", steps=3), resume=True, progress=False)


def test_bf16_mixed_precision_runs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(ToyTask, toy_recipe(run_dir, steps=4, mixed_precision="bf16"), progress=False)
    assert all(math.isfinite(r["loss"]) for r in run_log(run_dir))
    weights = load_file(run_dir / "checkpoint" / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in weights.values())  # autocast, fp32 master weights


class SlowToyTask(ToyTask):
    """A toy step that takes at least 20 ms, so a wall-time budget is spent in a few steps."""

    def loss(self, model, batch, generator):
        time.sleep(0.02)
        return super().loss(model, batch, generator)


def test_time_budget_stops_exports_and_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    recipe = toy_recipe(run_dir, steps=10_000, max_minutes=0.005, log_every=1000)  # 0.3 s
    model_dir = train(SlowToyTask, recipe, progress=False)
    config = json.loads((model_dir / "config.json").read_text())
    stopped = config["steps"]
    assert 3 <= stopped < 100 and config["wall_time_s"] >= 0.3
    assert math.isfinite(config["final_loss"])  # the partial log window was written
    assert json.loads((run_dir / "checkpoint" / "state.json").read_text())["step"] == stopped
    longer = toy_recipe(run_dir, steps=10_000, max_minutes=0.01, log_every=1000)
    config = json.loads((train(SlowToyTask, longer, resume=True, progress=False)
                         / "config.json").read_text())
    assert stopped < config["steps"] < 10_000 and config["wall_time_s"] >= 0.6
    with pytest.raises(InvalidInputError, match="max_minutes"):
        TrainConfig(max_minutes=-1)


def test_recipe_changes_lists_edits_but_not_steps() -> None:
    old = toy_recipe("a", steps=3)
    new = toy_recipe("b", steps=6, lr=3e-4)
    assert recipe_changes(old, new) == ["train.lr: 0.01 -> 0.0003"]


def test_ema_update_averages_params_and_copies_buffers() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = make_ema(model)
    assert not any(p.requires_grad for p in ema.parameters()) and not ema.training
    before = ema[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(5.0)
    ema_update(ema, model, 0.75)
    torch.testing.assert_close(ema[0].weight, 0.75 * before + 0.25 * model[0].weight)
    assert torch.equal(ema[1].running_mean, model[1].running_mean)
    ema_update(ema, model, 0.0)
    assert torch.equal(ema[0].weight, model[0].weight)


def test_lr_warmup_is_linear_then_constant() -> None:
    cfg = TrainConfig(lr=1.0, warmup_steps=4)
    assert [lr_at(cfg, s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_lr_decays_over_the_last_steps_and_follows_a_longer_run() -> None:
    cfg = TrainConfig(lr=1.0, steps=10, warmup_steps=2, decay_steps=4, min_lr_ratio=0.1)
    lrs = [lr_at(cfg, s) for s in range(10)]
    assert lrs[:6] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert all(a > b for a, b in zip(lrs[5:], lrs[6:], strict=False))  # strictly down
    assert lrs[-1] == pytest.approx(0.1)
    # extending the run (resume with more steps) moves the decay to the new end
    longer = TrainConfig(lr=1.0, steps=20, warmup_steps=2, decay_steps=4, min_lr_ratio=0.1)
    assert [lr_at(longer, s) for s in range(16)][-1] == 1.0
    assert lr_at(longer, 19) == pytest.approx(0.1)
    with pytest.raises(InvalidInputError, match="decay_steps"):
        TrainConfig(steps=10, warmup_steps=5, decay_steps=6)
    with pytest.raises(InvalidInputError, match="min_lr_ratio"):
        TrainConfig(min_lr_ratio=1.5)


def test_train_config_checks_keys_and_values() -> None:
    assert train_config({"train": {"lr": 1}}).lr == 1.0
    with pytest.raises(InvalidInputError, match="unknown key 'train.lrr'"):
        train_config({"train": {"lrr": 1e-3}})
    with pytest.raises(InvalidInputError, match="mixed_precision"):
        train_config({"train": {"mixed_precision": "fp16"}})
    with pytest.raises(InvalidInputError, match="train.steps must be between 1 and "):
        train_config({"train": {"steps": 0}})


@pytest.mark.parametrize(("key", "value"), [
    ("lr", 1e30), ("lr", 0.0), ("lr", -1e-3), ("lr", math.nan), ("lr", math.inf),
    ("betas", [0.9, 1.0]), ("betas", [-0.1, 0.999]), ("betas", [math.nan, 0.9]),
    ("weight_decay", -0.1), ("weight_decay", 2.0), ("grad_clip", math.nan),
    ("grad_clip", -1.0), ("ema_decay", 1.0), ("min_lr_ratio", math.inf),
    ("max_minutes", math.nan), ("steps", 10**12), ("batch_size", 0), ("batch_size", 10**7),
    ("seed", -1), ("seed", 2**64), ("log_every", 0), ("checkpoint_every", -3),
    ("warmup_steps", -1), ("sample_every", -1), ("run_dir", ""),
])
def test_train_values_out_of_range_are_one_line_errors_naming_them(key: str, value: object
                                                                   ) -> None:
    with pytest.raises(InvalidInputError, match=rf"train\.{key}") as err:
        train_config({"train": {key: value}})
    assert "\n" not in str(err.value)


def test_unknown_and_malformed_sections_are_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt section used to be ignored: `[trian]` trained 1000 default steps."""
    monkeypatch.chdir(tmp_path)  # where a recipe without train.run_dir would have written
    run = tmp_path / "run"
    recipe = toy_recipe(run)
    for bad, message in [
        ({"trian": recipe["train"]}, r"unknown recipe section \[trian\]; did you mean \[train\]"),
        ({"toyy": {}}, r"unknown recipe section \[toyy\]; did you mean \[toy\]"),
        ({"stepz": 3}, "unknown recipe key 'stepz'"),
        ({"toy": "big"}, r"section \[toy\] must be a table"),
        ({"train": [1]}, r"section \[train\] must be a table"),
        ({"name": 3}, "'name' must be a non-empty string"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            train(ToyTask, {**recipe, **bad}, progress=False)
    assert not run.exists() and not Path("runs/gambar").exists()


def test_every_family_declares_its_recipe_sections() -> None:
    """The loop refuses unknown sections only for factories that declare theirs."""
    from gambar.registry import EVALUATORS, GENERATORS, PARTS, task_factory

    for family in (*GENERATORS, *EVALUATORS, *PARTS):
        sections = task_factory(family).SECTIONS
        assert sections and "train" not in sections, family


@pytest.mark.slow
def test_ddp_two_cpu_processes_stay_in_sync_and_resume_exactly(tmp_path: Path) -> None:
    launch_two_ranks(tmp_path / "full", tmp_path / "out_full", steps=4, mode="fresh")
    r0 = load_file(tmp_path / "out_full" / "rank0.safetensors")
    r1 = load_file(tmp_path / "out_full" / "rank1.safetensors")
    assert_same_tensors(r0, r1)
    seen = [
        json.loads((tmp_path / "out_full" / f"rank{r}.json").read_text())["seen"] for r in (0, 1)
    ]
    assert seen == [[0, 2, 4, 6], [1, 3, 5, 7]]  # disjoint shares of one stream
    state = json.loads((tmp_path / "full" / "checkpoint" / "state.json").read_text())
    assert state["world_size"] == 2
    assert load_file(tmp_path / "full" / "checkpoint" / "rng.safetensors")["torch"].shape[0] == 2

    launch_two_ranks(tmp_path / "split", tmp_path / "out_a", steps=2, mode="fresh")
    launch_two_ranks(tmp_path / "split", tmp_path / "out_b", steps=4, mode="resume")
    assert_same_run(tmp_path / "full", tmp_path / "split")
    seen_b = json.loads((tmp_path / "out_b" / "rank1.json").read_text())["seen"]
    assert seen_b == [5, 7]  # the resumed rank 1 skips nothing and repeats nothing


@pytest.mark.slow
def test_ddp_ranks_agree_to_stop_when_one_rank_diverges(tmp_path: Path) -> None:
    """Rank 1 alone sees a NaN loss at step 4: both ranks stop there with the one-line error
    (none hangs in a collective), and the step-3 checkpoint is kept."""
    launch_two_ranks(tmp_path / "run", tmp_path / "out", steps=6, mode="nan-rank1")
    errors = [(tmp_path / "out" / f"rank{r}.stopped").read_text() for r in (0, 1)]
    assert "diverged at step 4: the loss is not finite on another process" in errors[0]
    assert "diverged at step 4: the loss is nan" in errors[1]
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["step"] == 3
    assert not (tmp_path / "run" / "model").exists()
