"""A bounded job queue that is fair between clients: round-robin, one job per client per turn.

One client submitting 100 jobs therefore delays another client's job by at most one job per
client ahead of it, not by 100. Not thread-safe on its own: the job service holds a lock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class QueueFull(Exception):
    """The queue (or this client's share of it) is full; try again later."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class FairQueue(Generic[T]):
    """Per-client FIFO queues served round-robin, with a total and a per-client bound."""

    def __init__(self, capacity: int, per_client: int) -> None:
        if capacity < 1 or per_client < 1:
            raise ValueError("capacity and per_client must be at least 1")
        self.capacity = capacity
        self.per_client = per_client
        self._queues: dict[str, deque[T]] = {}
        # Clients with queued items, in the order they will be served next. A client that
        # appears for the first time joins at the end, after everyone already waiting.
        self._order: deque[str] = deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def queued_by(self, client: str) -> int:
        """How many items `client` has waiting."""
        return len(self._queues.get(client, ()))

    def push(self, client: str, item: T) -> None:
        """Queue `item` for `client`; QueueFull if the queue or the client's share is full."""
        if self._size >= self.capacity:
            raise QueueFull(f"the queue is full ({self.capacity} jobs waiting)")
        if self.queued_by(client) >= self.per_client:
            raise QueueFull(f"you already have {self.per_client} jobs waiting (the limit "
                            "per client); wait for one to finish")
        if client not in self._queues:
            self._queues[client] = deque()
            self._order.append(client)
        self._queues[client].append(item)
        self._size += 1

    def pop(self) -> T | None:
        """The next item, taking clients in turn; None if the queue is empty."""
        if not self._order:
            return None
        client = self._order.popleft()
        queue = self._queues[client]
        item = queue.popleft()
        self._size -= 1
        if queue:
            self._order.append(client)  # its next item waits for everyone else's turn
        else:
            del self._queues[client]
        return item

    def remove(self, client: str, item: T) -> bool:
        """Take `item` out of the queue (a cancelled job); False if it was not queued."""
        queue = self._queues.get(client)
        if queue is None or item not in queue:
            return False
        queue.remove(item)
        self._size -= 1
        if not queue:
            del self._queues[client]
            self._order.remove(client)
        return True

    def position(self, client: str, item: T) -> int | None:
        """1-based place in the serving order (1 = next to run); None if not queued."""
        queue = self._queues.get(client)
        if queue is None or item not in queue:
            return None
        i = queue.index(item)  # the client's own items ahead of this one
        turn = self._order.index(client)
        ahead = i
        for k, other in enumerate(self._order):
            if other == client:
                continue
            # Clients served before this one in each round get i + 1 turns before it runs,
            # those after it only i.
            ahead += min(len(self._queues[other]), i + 1 if k < turn else i)
        return ahead + 1

    def order(self) -> list[T]:
        """Every queued item in the order it will be served (for tests and diagnostics)."""
        queues = {c: list(q) for c, q in self._queues.items()}
        rotation = list(self._order)
        out: list[T] = []
        while rotation:
            client = rotation.pop(0)
            out.append(queues[client].pop(0))
            if queues[client]:
                rotation.append(client)
        return out
