"""The endless, rank-sharded batch stream every TrainingTask yields: the exact-resume contract.

Batch b of rank r out of W holds items (b * W + r) * B ... + B - 1 of one global item sequence, so
the W ranks see disjoint shares of one stream, and a run resumed at batch `start` (the data
position its checkpoint saved) skips nothing and repeats nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def endless_batches(
    item: Callable[[int], T],
    collate: Callable[[list[T]], Any],
    *,
    start: int,
    rank: int,
    world_size: int,
    batch_size: int,
) -> Iterator[Any]:
    """Yield `collate([item(i) for i in this batch's indices])` for batches start, start + 1, ...
    of rank `rank` of `world_size`; `item(i)` must depend on i alone (not on call order)."""
    for b in itertools.count(start):
        first = (b * world_size + rank) * batch_size
        yield collate([item(i) for i in range(first, first + batch_size)])
