"""The server's knobs, decided once by `gambar serve` (or a test) and then fixed."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TOKEN_ENV = "GAMBAR_TOKEN"  # comma-separated tokens, one per user if fairness must hold


def default_results_dir() -> Path:
    """~/.cache/gambar/results (or under $XDG_CACHE_HOME)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "gambar" / "results"


def tokens_from_env() -> tuple[str, ...]:
    """Tokens named by $GAMBAR_TOKEN (comma-separated); empty if unset."""
    return tuple(t.strip() for t in os.environ.get(TOKEN_ENV, "").split(",") if t.strip())


MAX_COUNT = 1_000_000


@dataclass(frozen=True)
class ServerSettings:
    results_dir: Path
    tokens: tuple[str, ...] = ()  # empty: no authentication (the default bind is 127.0.0.1)
    queue_size: int = 100  # jobs waiting, all clients together; more are answered 429
    per_client: int = 20  # jobs waiting from one client, so that one cannot fill the queue
    workers: int = 1  # threads that generate; one uses every core already on a CPU
    keep_hours: float = 24.0  # results older than this are deleted
    max_results_mb: float = 1024.0  # and the oldest go when the folder grows past this
    max_body_kb: int = 1024  # larger request bodies are answered 413 without being read

    def __post_init__(self) -> None:
        from gambar.errors import InvalidInputError

        for name in ("queue_size", "per_client", "workers", "max_body_kb"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be at least 1, not {getattr(self, name)}")
        # Upper bounds keep every count a plain machine integer (a queue of 10**30 is a typo).
        for name in ("queue_size", "per_client", "workers", "max_body_kb"):
            if getattr(self, name) > MAX_COUNT:
                raise InvalidInputError(f"{name} must be at most {MAX_COUNT}, not "
                                        f"{getattr(self, name)}")
        for name in ("keep_hours", "max_results_mb"):  # NaN fails both comparisons
            if not 0 < getattr(self, name) <= MAX_COUNT:
                raise InvalidInputError(f"{name.replace('_', '-')} must be a positive number "
                                        f"up to {MAX_COUNT}, not {getattr(self, name)}")
