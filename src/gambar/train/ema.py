"""Exponential moving average of weights (Polyak averaging; the model that gets sampled)."""

from __future__ import annotations

import copy

import torch


def make_ema(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of `model` in eval mode, to be updated with `ema_update`."""
    ema = copy.deepcopy(model)
    ema.eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, in place; buffers (norm statistics) are copied."""
    ema_params = dict(ema.named_parameters())
    for name, param in model.named_parameters():
        target = ema_params[name]
        if decay == 0.0:
            target.copy_(param)  # exact copy; lerp with weight 1 can differ in the last bit
        else:
            target.lerp_(param.to(target.dtype), 1.0 - decay)
    ema_buffers = dict(ema.named_buffers())
    for name, buf in model.named_buffers():
        # Running statistics and counters are not averaged: the EMA uses the model's current ones.
        ema_buffers[name].copy_(buf)
