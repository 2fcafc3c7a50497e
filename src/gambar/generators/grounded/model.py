"""The grounded model: the layout stage (planner) and the layout-conditioned image stage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from gambar.generators.diffusion.unet import UNet, UNetConfig
from gambar.generators.grounded.grounding import GroundedCond, Grounding, GroundingConfig
from gambar.generators.grounded.planner import LayoutPlanner, PlannerConfig


class ImageStage(nn.Module):
    """A text-conditional UNet that also reads a layout (painted channels and/or tokens)."""

    def __init__(self, unet_cfg: UNetConfig, grounding: GroundingConfig, phrase_dim: int) -> None:
        super().__init__()
        self.unet = UNet(replace(unet_cfg, extra_channels=grounding.channels))
        self.grounding = Grounding(grounding, phrase_dim, unet_cfg.text_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: GroundedCond) -> torch.Tensor:
        states, mask = self.grounding.context(cond.text, cond.layout)
        extra = self.grounding.channels(cond.layout, x.shape[-1])
        return self.unet(x, t, states, mask, cond.text.pooled, extra)


class GroundedModel(nn.Module):
    """Both stages, trained together by one run with one optimiser each. `forward(part, ...)`
    dispatches so that a distributed wrapper sees every call."""

    def __init__(self, unet_cfg: UNetConfig, grounding: GroundingConfig, planner: PlannerConfig
                 ) -> None:
        super().__init__()
        self.image = ImageStage(unet_cfg, grounding, planner.text_dim)
        self.planner = LayoutPlanner(planner)

    def forward(self, part: str, *args: Any) -> torch.Tensor:
        if part == "image":
            return self.image(*args)
        if part == "planner":
            return self.planner.loss(*args)
        raise ValueError(f"unknown part {part!r}")

    def groups(self) -> dict[str, Sequence[nn.Parameter]]:
        return {"image": list(self.image.parameters()), "planner": list(self.planner.parameters())}
