"""The job journal: every acknowledged job that has not finished, in SQLite (WAL), so that a
server killed with `kill -9` runs them again when it restarts on the same results folder.

A job is written here (and the write is synced) before its submission is answered, marked when
a worker starts it, and removed once its result record (job.json in the results folder) is
written. So the record is the commit point of a finished job and this row the commit point of an
accepted one: on restart, a row whose job has a record finished already (only its removal was
lost) and is dropped; every other row runs again with its recorded spec and seeds, hence the same
pixels. Finished jobs stay in the results folder as before (the store sweeps them), so the
journal only ever holds what is still to do.

One server at a time may use a results folder: a second one would run the same jobs twice. A
lock file (flock, released by the kernel when the process dies, even by kill -9) guards it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gambar.errors import CorruptFileError, InvalidInputError

try:
    import fcntl
except ImportError:  # Windows: no advisory lock; run one server per results folder
    fcntl = None  # type: ignore[assignment]

JOURNAL = "jobs.sqlite3"
LOCK = "jobs.lock"
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order, kept across restarts
    id TEXT NOT NULL UNIQUE,
    client TEXT NOT NULL,
    spec TEXT NOT NULL,                     -- JobSpec.to_dict() as JSON
    created REAL NOT NULL,
    started REAL                            -- set while a worker draws it
)
"""


@dataclass(frozen=True)
class Pending:
    """One unfinished job read back from the journal."""

    id: str
    client: str
    spec: dict[str, Any]
    created: float
    was_running: bool


class JobJournal:
    """The unfinished jobs of one results folder. Not thread-safe: the job service's lock."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / JOURNAL
        self._lock_fd = _lock(Path(folder) / LOCK)
        try:
            # isolation_level=None: each statement commits on its own, before it returns.
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL syncs the WAL on every commit: an acknowledged job survives a power cut too,
            # not only a killed process (a few ms per job; a job takes seconds).
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise CorruptFileError(
                    f"{self.path} was written by a newer gambar (journal format {version}); "
                    "upgrade gambar or use another --results folder")
            self._db.execute(SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise CorruptFileError(
                f"the job journal {self.path} cannot be read ({exc}); move it away to start "
                "with an empty queue (its unfinished jobs are then lost)") from None
        except BaseException:
            self.close()
            raise

    def add(self, job_id: str, client: str, spec: dict[str, Any], created: float) -> None:
        """Record an accepted job; on disk when this returns."""
        self._db.execute("INSERT INTO jobs (id, client, spec, created) VALUES (?, ?, ?, ?)",
                         (job_id, client, json.dumps(spec), created))

    def started(self, job_id: str, when: float) -> None:
        """Note that a worker took the job (it runs first after a restart)."""
        self._db.execute("UPDATE jobs SET started = ? WHERE id = ?", (when, job_id))

    def remove(self, job_id: str) -> None:
        """Forget a job whose record is written (or that was deleted)."""
        self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def pending(self) -> list[Pending]:
        """Unfinished jobs in submission order."""
        rows = self._db.execute(
            "SELECT id, client, spec, created, started FROM jobs ORDER BY seq").fetchall()
        out = []
        for job_id, client, spec, created, started in rows:
            try:
                data = json.loads(spec)
            except ValueError:
                data = None  # the service reports it and drops the row
            out.append(Pending(job_id, client, data, float(created), started is not None))
        return out

    def close(self) -> None:
        """Close the database and release the folder for another server."""
        db = getattr(self, "_db", None)
        if db is not None:  # closed, it answers sqlite3.ProgrammingError, which callers log
            with contextlib.suppress(sqlite3.Error):
                db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None


def _lock(path: Path) -> int | None:
    """Hold an exclusive lock on `path` for this process; a one-line error if another holds it."""
    if fcntl is None:
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InvalidInputError(
            f"another gambar server is using the results folder {path.parent}; stop it, or "
            "pass --results with another folder") from None
    return fd
