"""The results folder: one sub-folder per job (its PNGs and job.json), kept within a size limit
and an age limit.

Every path is built here from a validated job id and an integer index, so nothing a request
says can reach a file outside the folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gambar.fsutil import atomic_write_bytes, atomic_write_text, fsync_dir
from gambar.server.jobs import is_job_id

log = logging.getLogger("gambar.server")

RECORD = "job.json"


class ResultStore:
    """PNG files and job records under `root`, swept by age (`keep_s`) and total size."""

    def __init__(self, root: Path, *, keep_s: float, max_bytes: int) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_s = keep_s
        self.max_bytes = max_bytes
        # job id -> (bytes on disk, time finished); kept in memory so a sweep needs no walk.
        self._sizes: dict[str, tuple[int, float]] = {}

    def _dir(self, job_id: str) -> Path:
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

    @staticmethod
    def image_name(index: int) -> str:
        if not 0 <= index < 10_000:
            raise ValueError(f"image index out of range: {index}")
        return f"{index}.png"

    def write_image(self, job_id: str, index: int, png: bytes) -> str:
        """Store one PNG; returns its file name inside the job's folder."""
        folder = self._dir(job_id)
        if not folder.is_dir():
            folder.mkdir()
            fsync_dir(self.root)
        name = self.image_name(index)
        atomic_write_bytes(folder / name, png, overwrite=True)
        return name

    def write_record(self, job_id: str, record: dict[str, Any], finished: float) -> None:
        """Store a finished job's record and account for its size."""
        folder = self._dir(job_id)
        if not folder.is_dir():
            folder.mkdir()
            fsync_dir(self.root)  # the record is the job's commit point: its folder must last too
        atomic_write_text(folder / RECORD, json.dumps(record, indent=1), overwrite=True)
        self._sizes[job_id] = (_folder_bytes(folder), finished)

    def image_path(self, job_id: str, index: int) -> Path | None:
        """The stored PNG of image `index` of a job, or None if there is none."""
        try:
            path = self._dir(job_id) / self.image_name(index)
        except ValueError:
            return None
        return path if path.is_file() else None

    def delete(self, job_id: str) -> None:
        """Remove a job's folder (if any)."""
        self._sizes.pop(job_id, None)
        with contextlib.suppress(ValueError, FileNotFoundError):
            shutil.rmtree(self._dir(job_id))

    def total_bytes(self) -> int:
        return sum(size for size, _ in self._sizes.values())

    def load_records(self, unfinished: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Records of the jobs already in the folder (a restarted server serves them again).

        A folder without a readable record is removed: the partial images of a job in
        `unfinished` (it runs again), or else something unreadable, which is logged.
        """
        rerun = set(unfinished)
        records = []
        for folder in sorted(self.root.iterdir()):
            if not (folder.is_dir() and is_job_id(folder.name)):
                continue  # only our own folders; anything else in root is left alone
            try:
                record = json.loads((folder / RECORD).read_text())
                finished = float(record["finished"])
            except (OSError, ValueError, KeyError, TypeError):
                if folder.name not in rerun:
                    log.warning("removing unfinished or unreadable results in %s", folder)
                shutil.rmtree(folder, ignore_errors=True)
                continue
            self._sizes[folder.name] = (_folder_bytes(folder), finished)
            records.append(record)
        return records

    def sweep(self, now: float | None = None, keep: Iterable[str] = ()) -> list[str]:
        """Delete results past their age, then the oldest until under the size limit.

        Returns the ids removed. Jobs in `keep` (unfinished ones) are never touched.
        """
        now = time.time() if now is None else now
        protected = set(keep)
        removed = [job_id for job_id, (_, finished) in self._sizes.items()
                   if now - finished > self.keep_s and job_id not in protected]
        for job_id in removed:
            self.delete(job_id)
        total = self.total_bytes()
        if total > self.max_bytes:
            for job_id, (size, _) in sorted(self._sizes.items(), key=lambda kv: kv[1][1]):
                if total <= self.max_bytes:
                    break
                if job_id in protected:
                    continue
                self.delete(job_id)
                removed.append(job_id)
                total -= size
        return removed


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
