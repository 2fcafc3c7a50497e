"""A bounded job queue that is fair between clients: round-robin, one job per client per turn.

Fairness has two levels. Clients belong to a group (their token, or their address); turns go
round-robin between groups first, then between the clients of the group whose turn it is. One
client submitting 100 jobs therefore delays another group's job by at most one job per group
ahead of it, and an address that rotates X-Client-Id over 200 ids still gets one turn, and one
share of the queue (`per_client` jobs), like any other address.

Not thread-safe on its own: the job service holds a lock.
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
    """Per-client FIFO queues served round-robin (between groups, then within a group).

    Bounds: `capacity` items in all, `per_client` from one client and `per_client` from one
    group. A client without a group is a group of its own.
    """

    def __init__(self, capacity: int, per_client: int) -> None:
        if capacity < 1 or per_client < 1:
            raise ValueError("capacity and per_client must be at least 1")
        self.capacity = capacity
        self.per_client = per_client
        self._queues: dict[str, deque[T]] = {}  # client -> its items, oldest first
        self._group_of: dict[str, str] = {}  # client -> its group, while it has items
        # Per group, its clients with items in turn order; and the groups in turn order. A
        # client or group that appears for the first time joins at the end of its rotation.
        self._clients: dict[str, deque[str]] = {}
        self._groups: deque[str] = deque()
        self._group_size: dict[str, int] = {}
        self._size = 0
        self._positions: dict[T, int] | None = None  # cache of order(), dropped on any change

    def __len__(self) -> int:
        return self._size

    def queued_by(self, client: str) -> int:
        """How many items `client` has waiting."""
        return len(self._queues.get(client, ()))

    def queued_by_group(self, group: str) -> int:
        """How many items the clients of `group` have waiting together."""
        return self._group_size.get(group, 0)

    def push(self, client: str, item: T, *, group: str | None = None) -> None:
        """Queue `item` for `client` (of `group`); QueueFull if a bound is reached."""
        group = client if group is None else group
        if self._size >= self.capacity:
            raise QueueFull(f"the queue is full ({self.capacity} jobs waiting)")
        if self.queued_by(client) >= self.per_client:
            raise QueueFull(f"you already have {self.per_client} jobs waiting (the limit "
                            "per client); wait for one to finish")
        if self.queued_by_group(group) >= self.per_client:
            raise QueueFull(f"{self.per_client} jobs are already waiting from your address "
                            "(the limit per client applies per address too, whatever "
                            "X-Client-Id says); wait for one to finish, or ask for a token")
        self.restore(client, item, group=group)

    def restore(self, client: str, item: T, *, group: str | None = None,
                first: bool = False) -> None:
        """Queue `item` without checking the bounds (jobs read back after a restart).

        With `first`, the item runs next: before its client's other items, and its client
        and group take the next turn (a job that was running when the server stopped).
        """
        group = client if group is None else group
        known = self._group_of.get(client)
        if known is not None and known != group:
            raise ValueError(f"client {client!r} is already queued in group {known!r}")
        if group not in self._clients:
            self._clients[group] = deque()
            self._groups.append(group)
            self._group_size[group] = 0
        if client not in self._queues:
            self._queues[client] = deque()
            self._group_of[client] = group
            self._clients[group].append(client)
        if first:
            self._queues[client].appendleft(item)
            _to_front(self._clients[group], client)
            _to_front(self._groups, group)
        else:
            self._queues[client].append(item)
        self._group_size[group] += 1
        self._size += 1
        self._positions = None

    def pop(self) -> T | None:
        """The next item, taking groups and then their clients in turn; None if empty."""
        if not self._groups:
            return None
        group = self._groups.popleft()
        clients = self._clients[group]
        client = clients.popleft()
        item = self._queues[client].popleft()
        if self._queues[client]:
            clients.append(client)  # its next item waits for its group's other clients
        self._taken(client, group)
        if clients:
            self._groups.append(group)  # the group's next item waits for every other group
        return item

    def remove(self, client: str, item: T) -> bool:
        """Take `item` out of the queue (a cancelled job); False if it was not queued."""
        queue = self._queues.get(client)
        if queue is None or item not in queue:
            return False
        queue.remove(item)
        group = self._group_of[client]
        if not queue:
            self._clients[group].remove(client)
        self._taken(client, group)
        if group not in self._clients:  # that was the group's last item
            self._groups.remove(group)
        return True

    def _taken(self, client: str, group: str) -> None:
        """Bookkeeping after one item of `client` left the queue."""
        self._size -= 1
        self._group_size[group] -= 1
        if not self._queues[client]:
            del self._queues[client], self._group_of[client]
        if not self._group_size[group]:
            del self._group_size[group], self._clients[group]
        self._positions = None

    def position(self, client: str, item: T) -> int | None:
        """1-based place in the serving order (1 = next to run); None if not queued."""
        if item not in self._queues.get(client, ()):
            return None
        if self._positions is None:
            self._positions = {it: k + 1 for k, it in enumerate(self.order())}
        return self._positions[item]

    def order(self) -> list[T]:
        """Every queued item in the order it will be served (what pop() would return)."""
        queues = {c: deque(q) for c, q in self._queues.items()}
        clients = {g: deque(cs) for g, cs in self._clients.items()}
        groups = deque(self._groups)
        out: list[T] = []
        while groups:
            group = groups.popleft()
            client = clients[group].popleft()
            out.append(queues[client].popleft())
            if queues[client]:
                clients[group].append(client)
            if clients[group]:
                groups.append(group)
        return out


def _to_front(rotation: deque[str], key: str) -> None:
    rotation.remove(key)
    rotation.appendleft(key)
