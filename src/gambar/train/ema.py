"""Exponential moving average of weights (Polyak averaging; the model that gets sampled).

The EMA is a copy of the whole model, but only one part of it may be averaged (a GAN's
generator): `ema_update` averages the parameters under that part and copies the rest exactly, so
the exported model is the averaged part beside the live weights of everything else.
"""

from __future__ import annotations

import copy

import torch


def make_ema(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of `model` in eval mode, to be updated with `ema_update`."""
    ema = copy.deepcopy(model)
    ema.eval()
    ema.requires_grad_(False)
    return ema


def ema_scope(model: torch.nn.Module, target: torch.nn.Module | None) -> str | None:
    """The qualified name of `target` inside `model` ("" for `model` itself, None for None),
    which `ema_update` takes; a module that is not part of `model` is a ValueError."""
    if target is None:
        return None
    for name, module in model.named_modules():
        if module is target:
            return name
    raise ValueError(f"the EMA target {type(target).__name__} is not a submodule of the task's "
                     "model; ema_target(model) must return model, one of its submodules or None")


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float,
               scope: str | None = "") -> None:
    """ema <- decay * ema + (1 - decay) * model, in place, for the parameters under `scope` (a
    qualified submodule name from `ema_scope`: "" all of them, None none); every other parameter
    and every buffer (norm statistics) is copied."""
    ema_params = dict(ema.named_parameters())
    for name, param in model.named_parameters():
        target = ema_params[name]
        if decay == 0.0 or not _within(name, scope):
            target.copy_(param)  # exact copy; lerp with weight 1 can differ in the last bit
        else:
            target.lerp_(param.to(target.dtype), 1.0 - decay)
    ema_buffers = dict(ema.named_buffers())
    for name, buf in model.named_buffers():
        # Running statistics and counters are not averaged: the EMA uses the model's current ones.
        ema_buffers[name].copy_(buf)


def _within(name: str, scope: str | None) -> bool:
    if scope is None:
        return False
    return scope == "" or name == scope or name.startswith(scope + ".")
