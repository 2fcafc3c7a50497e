"""A toy TrainingTask for the loop's tests; run as a script it is one DDP rank (see test_train)."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
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


def _ddp_main(run_dir: str, out_dir: str, steps: int, mode: str) -> None:
    """One rank: train, then dump this replica's weights and the batch indices it saw.

    mode: "fresh", "resume", or "nan-rank1": rank 1's fourth loss is NaN, and every rank must
    stop with the one-line error, which it writes to rank<r>.stopped instead of its weights.
    """
    from gambar.errors import GambarError
    from gambar.train.loop import train

    tasks: list[ToyTask] = []

    def factory(recipe: dict[str, Any]) -> ToyTask:
        tasks.append(PoisonedToyTask(recipe, at_call=3, rank=1) if mode == "nan-rank1"
                     else ToyTask(recipe))
        return tasks[-1]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    try:
        train(factory, toy_recipe(run_dir, steps=steps), resume=mode == "resume", progress=False)
    except GambarError as e:
        (out / f"rank{rank}.stopped").write_text(str(e))
        return
    state = {k: v.contiguous() for k, v in tasks[0].model.state_dict().items()}
    save_file(state, out / f"rank{rank}.safetensors")
    (out / f"rank{rank}.json").write_text(json.dumps({"seen": tasks[0].seen}))


if __name__ == "__main__":
    torch.set_num_threads(1)
    _ddp_main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
