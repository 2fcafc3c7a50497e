"""Per-image randomness: a seed gives the same image whatever the batch it is drawn in.

Seeds are checked where no model is loaded (the CLI, provenance, request schemas), so torch is
imported only by the functions that draw noise."""

from __future__ import annotations

import numbers
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MAX_SEED = 2**63 - 1


def random_seed() -> int:
    """A fresh seed for a user who gave none (recorded in the image's provenance)."""
    return secrets.randbelow(2**32)


def check_seed(seed: int) -> int:
    """Validate a user-supplied seed."""
    from gambar.errors import InvalidInputError

    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise InvalidInputError(f"seed must be a whole number, not {seed!r}")
    if not 0 <= seed <= MAX_SEED:
        raise InvalidInputError(f"seed must be between 0 and {MAX_SEED}, not {seed}")
    return seed


def generators_for(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image (CPU so that a seed means the same noise on any device)."""
    import torch

    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def initial_noise(shape: Sequence[int], generators: Sequence[torch.Generator]) -> torch.Tensor:
    """(B, *shape) standard normal noise, image k drawn from generators[k] alone."""
    import torch

    return torch.stack([torch.randn(tuple(shape), generator=g) for g in generators])
