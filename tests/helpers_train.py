"""Toy TrainingTasks for the loop's tests, run comparisons, and two-rank DDP launches: run as a
script this file is one DDP rank (`launch_two_ranks`)."""

from __future__ import annotations

import copy
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from gambar.train.task import Update

FEATURES = 4


def target(x: torch.Tensor) -> torch.Tensor:
    """The function the MLP learns. x: (B, 4) -> (B, 1)."""
    return (torch.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] - 0.5 * x[:, 3]).unsqueeze(1)


class ToyTask:
    """Tiny MLP regressing `target` on inputs derived from the global batch index."""

    SECTIONS = ("toy",)  # the recipe sections it reads besides [train]

    def __init__(self, recipe: dict[str, Any]) -> None:
        hidden = recipe.get("toy", {}).get("hidden", 16)
        # Dropout draws from torch's global RNG, so resume must restore that stream too.
        self.model = nn.Sequential(
            nn.Linear(FEATURES, hidden), nn.Tanh(), nn.Dropout(0.1), nn.Linear(hidden, 1)
        )
        self.seen: list[int] = []

    def batches(self, start: int, rank: int, world_size: int, batch_size: int) -> Iterator[Any]:
        """Batch i of rank r is global batch i * world_size + r: disjoint across ranks."""
        for i in itertools.count(start):
            index = i * world_size + rank
            self.seen.append(index)
            g = torch.Generator().manual_seed(index)
            x = torch.rand(batch_size, FEATURES, generator=g) * 2 - 1
            yield {"x": x, "y": target(x)}

    def param_groups(self, model: nn.Module) -> dict[str, list[nn.Parameter]]:
        return {"model": list(model.parameters())}

    def ema_target(self, model: nn.Module) -> nn.Module:
        return model

    def step(self, model: nn.Module, batch: Any, generator: torch.Generator,
             step: int) -> Iterator[Update]:
        yield Update("model", self.loss(model, batch, generator))

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor:
        """MSE on generator-jittered inputs; the python/numpy draws test their RNG restore."""
        # The generator lives on the CPU (STYLE §6): draw there, then follow the batch's device.
        noise = 0.01 * torch.randn(batch["x"].shape, generator=generator).to(batch["x"].device)
        scale = 1.0 + 1e-3 * random.random() + 1e-3 * float(np.random.rand())
        return scale * F.mse_loss(model(batch["x"] + noise), batch["y"])

    def sample_grid(self, model: nn.Module) -> Image.Image:
        """The model's output over a 16x16 grid of (x0, x1), as a grey image."""
        u = torch.linspace(-1, 1, 16)
        x = torch.zeros(256, FEATURES)
        x[:, 0], x[:, 1] = u.repeat(16), u.repeat_interleave(16)
        torch.rand(3)  # sampling may draw global randomness; the loop must isolate it
        out = model(x).reshape(16, 16)
        pixels = ((out.clamp(-2, 2) + 2) * 63.75).to(torch.uint8).numpy()
        return Image.fromarray(pixels, mode="L")

    def export(self, model: nn.Module, path: Path, summary: dict[str, Any]) -> None:
        """config.json + model.safetensors."""
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()}, path / "model.safetensors"
        )
        (path / "config.json").write_text(json.dumps({"family": "toy", **summary}))


class InterruptingToyTask(ToyTask):
    """Sends itself SIGINT during loss call number `at_call` (0-based), like a user's Ctrl-C."""

    def __init__(self, recipe: dict[str, Any], at_call: int) -> None:
        super().__init__(recipe)
        self.calls, self.at_call = 0, at_call

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor:
        if self.calls == self.at_call:
            signal.raise_signal(signal.SIGINT)
        self.calls += 1
        return super().loss(model, batch, generator)


class PoisonedToyTask(ToyTask):
    """Goes wrong during loss call number `at_call` (0-based), on rank `rank` only.

    "loss": that call returns NaN. "weight": the call's loss stays finite, but a weight it used
    becomes NaN before backward, so the update leaves NaN weights behind (what an lr of 1e30
    does) and only a check of the weights can tell.
    """

    def __init__(self, recipe: dict[str, Any], at_call: int, kind: str = "loss",
                 rank: int = 0) -> None:
        super().__init__(recipe)
        self.calls, self.at_call, self.kind, self.rank = 0, at_call, kind, rank

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor:
        poisoned = self.calls == self.at_call and int(os.environ.get("RANK", "0")) == self.rank
        self.calls += 1
        loss = super().loss(model, batch, generator)
        if poisoned and self.kind == "loss":
            return loss * float("nan")
        if poisoned:
            with torch.no_grad():
                next(model.parameters()).data[0, 0] = float("nan")
        return loss


def toy_recipe(run_dir: Path | str, **train: Any) -> dict[str, Any]:
    """A recipe for ToyTask: a few steps, checkpoints every 3, samples every 3."""
    base: dict[str, Any] = {
        "steps": 6,
        "batch_size": 8,
        "lr": 1e-2,
        "warmup_steps": 2,
        "grad_clip": 1.0,
        "weight_decay": 0.01,
        "ema_decay": 0.9,
        "ema_start": 1,
        "seed": 3,
        "checkpoint_every": 3,
        "sample_every": 3,
        "log_every": 2,
        "run_dir": str(run_dir),
    }
    base.update(train)
    return {"family": "toy", "train": base, "toy": {"hidden": 16}}


def gan_recipe(run_dir: Path | str, **train: Any) -> dict[str, Any]:
    """The toy family's tiny two-optimiser GAN recipe (tests/toy_family): a few steps,
    checkpoints every 3, a log line every step, EMA decay 0.9 on the generator."""
    from toy_family.task import TINY_RECIPE

    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["train"].update({"steps": 6, "batch_size": 4, "checkpoint_every": 3, "log_every": 1,
                            "sample_every": 0, "ema_decay": 0.9, "run_dir": str(run_dir)})
    recipe["train"].update(train)
    return recipe


def run_log(run_dir: Path) -> list[dict[str, Any]]:
    """log.jsonl's lines."""
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert torch.equal(a[name], b[name]), f"{name} differs"


def assert_same_run(a: Path, b: Path) -> None:
    """Two run directories hold bit-identical final checkpoints (weights, EMA, every optimizer,
    RNG states), exports and logs (all but wall time)."""
    ca, cb = a / "checkpoint", b / "checkpoint"
    names = sorted(p.name for p in ca.iterdir())
    assert names == sorted(p.name for p in cb.iterdir())
    for name in names:
        if name.endswith(".safetensors"):
            assert_same_tensors(load_file(ca / name), load_file(cb / name))
        elif name == "state.json":
            sa, sb = (json.loads((c / name).read_text()) for c in (ca, cb))
            assert (sa["step"], sa["data_position"]) == (sb["step"], sb["data_position"])
        else:
            assert json.loads((ca / name).read_text()) == json.loads((cb / name).read_text()), name
    exported = sorted(p.name for p in (a / "model").glob("*.safetensors"))
    assert exported and exported == sorted(p.name for p in (b / "model").glob("*.safetensors"))
    for name in exported:
        assert_same_tensors(load_file(a / "model" / name), load_file(b / "model" / name))

    def figures(run: Path) -> list[dict[str, Any]]:
        return [{k: v for k, v in line.items() if k != "time"} for line in run_log(run)]

    assert figures(a) == figures(b)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_ranks(run_dir: Path, out_dir: Path, steps: int, mode: str) -> None:
    """Two gloo ranks of `_ddp_main` through `accelerate launch`. On a CPU-only machine `--cpu
    --num_processes 2` silently starts one process (accelerate wants mpirun for multi-CPU), so
    ask for the torchrun-based launcher with --multi_gpu; the loop then picks gloo since CUDA is
    absent."""
    helper = Path(__file__)
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": str(helper.parent),
    }
    for _ in range(3):
        # The free port is closed again before the launcher binds it, so another process (the
        # other xdist worker) can take it first: the rendezvous then fails before any training
        # step, and a fresh port is safe to try.
        cmd = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
            "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1",
            "--main_process_port", str(_free_port()),
            str(helper), str(run_dir), str(out_dir), str(steps), mode,
        ]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if "EADDRINUSE" not in result.stderr:
            break
    assert result.returncode == 0, result.stderr[-3000:]


def _ddp_main(run_dir: str, out_dir: str, steps: int, mode: str) -> None:
    """One rank: train, then dump this replica's weights (and, for ToyTask, the batch indices
    it saw).

    mode: "fresh", "resume", or "nan-rank1" (ToyTask): rank 1's fourth loss is NaN, and every
    rank must stop with the one-line error, which it writes to rank<r>.stopped instead of its
    weights; "gan" or "gan-resume": the toy family's two-optimiser GAN (tests/toy_family).
    """
    from gambar.errors import GambarError
    from gambar.train.loop import train

    tasks: list[Any] = []
    gan = mode.startswith("gan")

    def factory(recipe: dict[str, Any]) -> Any:
        if gan:
            from toy_family.task import ToyTask as GanTask

            tasks.append(GanTask(recipe))
        else:
            tasks.append(PoisonedToyTask(recipe, at_call=3, rank=1) if mode == "nan-rank1"
                         else ToyTask(recipe))
        return tasks[-1]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    recipe = gan_recipe(run_dir, steps=steps) if gan else toy_recipe(run_dir, steps=steps)
    try:
        train(factory, recipe, resume=mode.endswith("resume"), progress=False)
    except GambarError as e:
        (out / f"rank{rank}.stopped").write_text(str(e))
        return
    state = {k: v.contiguous() for k, v in tasks[0].model.state_dict().items()}
    save_file(state, out / f"rank{rank}.safetensors")
    if not gan:
        (out / f"rank{rank}.json").write_text(json.dumps({"seen": tasks[0].seen}))


if __name__ == "__main__":
    torch.set_num_threads(1)
    _ddp_main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
