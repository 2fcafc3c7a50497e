"""Normalisation helpers."""

from __future__ import annotations

from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with the most groups (<= 32) that divide `channels` into groups of >= 4."""
    groups = next(g for g in range(min(32, max(1, channels // 4)), 0, -1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)
