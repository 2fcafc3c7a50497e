"""Human A/B judgement: pairs of images stored in SQLite, votes, and a ranking of models.

A person sees two models' images for the same prompt and seed and picks one (or calls a tie).
Rankings: Bradley-Terry strengths fitted with Hunter's (2004) MM algorithm (Bradley & Terry 1952;
ties count half a win each way, as in Davidson 1970's simplest form), and Elo ratings (Elo 1978)
for a running order. The web page that shows the pairs belongs to the server; it only needs
`ABStore.next_pair`, `ABStore.vote` and `ABStore.ranking`.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gambar.errors import CorruptFileError, InvalidInputError

WINNERS = ("a", "b", "tie")
ELO_K = 16.0  # rating points moved by a fully unexpected result; small: votes are noisy
ELO_START = 1000.0
BT_ITERATIONS = 1000
BT_TOLERANCE = 1e-10
# A tiny prior: every model is treated as having tied one virtual game against every other, so a
# model that never lost still gets a finite strength (Hunter 2004 needs a connected win graph).
BT_PRIOR_TIES = 0.01

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (
    id INTEGER PRIMARY KEY,
    prompt TEXT NOT NULL,
    seed INTEGER NOT NULL,
    model_a TEXT NOT NULL,
    model_b TEXT NOT NULL,
    image_a TEXT NOT NULL,
    image_b TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY,
    pair_id INTEGER NOT NULL REFERENCES pairs(id),
    winner TEXT NOT NULL CHECK (winner IN ('a', 'b', 'tie')),
    rater TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS votes_by_pair ON votes(pair_id);
"""


@dataclass(frozen=True)
class Pair:
    """Two models' images (paths or URLs) for one prompt and seed."""

    id: int
    prompt: str
    seed: int
    model_a: str
    model_b: str
    image_a: str
    image_b: str


@dataclass(frozen=True)
class Outcome:
    """One vote as a game: `winner` beat `loser`, or they tied."""

    winner: str
    loser: str
    tie: bool = False


class ABStore:
    """SQLite storage of A/B pairs and votes; safe to share between threads (one lock, short
    transactions), and across processes through SQLite's own locking."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            with self._connect() as db:
                db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:  # not a database, or a folder that refuses it
            raise CorruptFileError(
                f"{self.path} is not a usable A/B database ({exc}); give another --db") from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A connection per call: sqlite3 connections must not cross threads, and a commit at the
        # end of each call means a crash never loses an acknowledged vote.
        with self._lock:
            db = sqlite3.connect(self.path, timeout=10.0)
            try:
                db.execute("PRAGMA foreign_keys = ON")
                yield db
                db.commit()
            finally:
                db.close()

    def add_pair(self, prompt: str, seed: int, model_a: str, model_b: str, image_a: str,
                 image_b: str) -> int:
        """Store a pair to show; returns its id."""
        if model_a == model_b:
            raise InvalidInputError("an A/B pair needs two different models")
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO pairs (prompt, seed, model_a, model_b, image_a, image_b, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (prompt, int(seed), model_a, model_b, image_a, image_b, time.time()))
            return int(cur.lastrowid or 0)

    def pair(self, pair_id: int) -> Pair:
        """The stored pair `pair_id`."""
        with self._connect() as db:
            row = db.execute("SELECT id, prompt, seed, model_a, model_b, image_a, image_b "
                             "FROM pairs WHERE id = ?", (pair_id,)).fetchone()
        if row is None:
            raise InvalidInputError(f"no A/B pair with id {pair_id}")
        return Pair(*row)

    def next_pair(self, rater: str) -> Pair | None:
        """A pair `rater` has not voted on yet, fewest votes first (then oldest); None if none."""
        with self._connect() as db:
            row = db.execute(
                "SELECT p.id, p.prompt, p.seed, p.model_a, p.model_b, p.image_a, p.image_b "
                "FROM pairs p LEFT JOIN votes v ON v.pair_id = p.id "
                "WHERE p.id NOT IN (SELECT pair_id FROM votes WHERE rater = ?) "
                "GROUP BY p.id ORDER BY COUNT(v.id), p.id LIMIT 1", (rater,)).fetchone()
        return None if row is None else Pair(*row)

    def vote(self, pair_id: int, winner: str, rater: str = "anonymous") -> int:
        """Record that `rater` preferred side `winner` ("a", "b" or "tie"); returns the vote id."""
        if winner not in WINNERS:
            raise InvalidInputError(f"winner must be one of {', '.join(WINNERS)}, not {winner!r}")
        try:
            with self._connect() as db:
                cur = db.execute(
                    "INSERT INTO votes (pair_id, winner, rater, created) VALUES (?, ?, ?, ?)",
                    (int(pair_id), winner, rater, time.time()))
                return int(cur.lastrowid or 0)
        except sqlite3.IntegrityError:
            raise InvalidInputError(f"no A/B pair with id {pair_id}") from None

    def voted(self, pair_id: int, rater: str) -> bool:
        """Whether `rater` has already voted on pair `pair_id`."""
        with self._connect() as db:
            row = db.execute("SELECT 1 FROM votes WHERE pair_id = ? AND rater = ? LIMIT 1",
                             (int(pair_id), rater)).fetchone()
        return row is not None

    def outcomes(self) -> list[Outcome]:
        """Every vote as a game, in the order cast."""
        with self._connect() as db:
            rows = db.execute("SELECT p.model_a, p.model_b, v.winner FROM votes v "
                              "JOIN pairs p ON p.id = v.pair_id ORDER BY v.id").fetchall()
        return [Outcome(b, a) if w == "b" else Outcome(a, b, tie=w == "tie") for a, b, w in rows]

    def ranking(self) -> list[dict[str, float | str | int]]:
        """Models best first: Bradley-Terry strength (sums to 1), Elo, games, wins, ties."""
        games = self.outcomes()
        bt, elo = bradley_terry(games), elo_ratings(games)
        stats = {m: {"games": 0, "wins": 0.0} for m in bt}
        for g in games:
            for m in (g.winner, g.loser):
                stats[m]["games"] += 1
            if g.tie:
                stats[g.winner]["wins"] += 0.5
                stats[g.loser]["wins"] += 0.5
            else:
                stats[g.winner]["wins"] += 1
        return [{"model": m, "strength": bt[m], "elo": elo[m], **stats[m]}
                for m in sorted(bt, key=lambda m: (-bt[m], m))]


def _models(outcomes: Sequence[Outcome]) -> list[str]:
    return sorted({m for g in outcomes for m in (g.winner, g.loser)})


def bradley_terry(outcomes: Iterable[Outcome], iterations: int = BT_ITERATIONS
                  ) -> dict[str, float]:
    """Bradley-Terry strengths p (sum 1), P(i beats j) = p_i / (p_i + p_j); MM (Hunter 2004).

    Update: p_i <- W_i / sum_j n_ij / (p_i + p_j), W_i = wins of i (ties half), n_ij = games.
    """
    games = list(outcomes)
    models = _models(games)
    if not models:
        return {}
    idx = {m: k for k, m in enumerate(models)}
    k = len(models)
    wins = [0.0] * k
    n = [[0.0] * k for _ in range(k)]
    for i in range(k):  # the prior: one fractional tie between every pair
        for j in range(k):
            if i != j:
                n[i][j] += BT_PRIOR_TIES
                wins[i] += BT_PRIOR_TIES / 2
    for g in games:
        w, lo = idx[g.winner], idx[g.loser]
        n[w][lo] += 1
        n[lo][w] += 1
        wins[w] += 0.5 if g.tie else 1.0
        wins[lo] += 0.5 if g.tie else 0.0
    p = [1.0 / k] * k
    for _ in range(iterations):
        new = [wins[i] / sum(n[i][j] / (p[i] + p[j]) for j in range(k) if j != i)
               if k > 1 else 1.0 for i in range(k)]
        total = sum(new)
        new = [x / total for x in new]
        done = max(abs(a - b) for a, b in zip(new, p, strict=True)) < BT_TOLERANCE
        p = new
        if done:
            break
    return {m: p[idx[m]] for m in models}


def elo_ratings(outcomes: Iterable[Outcome], k: float = ELO_K, start: float = ELO_START
                ) -> dict[str, float]:
    """Elo ratings after playing the games in order (Elo 1978; logistic, 400-point scale)."""
    rating: dict[str, float] = {}
    for g in outcomes:
        ra, rb = rating.setdefault(g.winner, start), rating.setdefault(g.loser, start)
        expected = 1.0 / (1.0 + math.pow(10.0, (rb - ra) / 400.0))
        actual = 0.5 if g.tie else 1.0
        rating[g.winner] = ra + k * (actual - expected)
        rating[g.loser] = rb - k * (actual - expected)
    return rating
