"""The text-encoder interface every generator consumes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class Encoded:
    """Encoded prompts. states: (B, L, D) token states; mask: (B, L) bool, True = real token;
    pooled: (B, D) one vector per prompt."""

    states: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def __len__(self) -> int:
        return self.states.shape[0]

    @staticmethod
    def cat(parts: Sequence[Encoded]) -> Encoded:
        """Concatenate along the batch, padding token axes to the longest L."""
        length = max(p.states.shape[1] for p in parts)

        def pad(t: torch.Tensor, value: float | bool) -> torch.Tensor:
            extra = length - t.shape[1]
            if extra == 0:
                return t
            shape = (t.shape[0], extra, *t.shape[2:])
            return torch.cat([t, t.new_full(shape, value)], dim=1)

        return Encoded(
            states=torch.cat([pad(p.states, 0.0) for p in parts]),
            mask=torch.cat([pad(p.mask, False) for p in parts]),
            pooled=torch.cat([p.pooled for p in parts]),
        )

    def index(self, idx: torch.Tensor | slice) -> Encoded:
        return Encoded(self.states[idx], self.mask[idx], self.pooled[idx])


class TextEncoder(Protocol):
    """Maps prompts to an `Encoded`. `dim` is D; `name`/`version` go into provenance."""

    dim: int
    name: str

    def __call__(self, texts: Sequence[str]) -> Encoded: ...


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of states (B, L, D) over real tokens, mask (B, L) bool -> (B, D)."""
    weights = mask.to(states.dtype).unsqueeze(-1)  # (B, L, 1)
    # clamp: an all-padding row (the encoders never produce one) would otherwise divide by zero
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
