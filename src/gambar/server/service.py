"""The job service: the fair queue, the worker threads that own generation, the results store.

Request handlers call submit/get/cancel/wait, which work under one lock; every image is drawn by
a worker thread, so a slow model never blocks the event loop, and a job goes on (and can be
fetched by id) when the client that submitted it disconnects.

Durability: a job is in the journal (SQLite, synced) before submit() returns, and its result
record is written before it leaves the journal. A server stopped in any way (SIGTERM, kill -9,
a power cut) and started again on the same results folder runs every unfinished job again:
the ones that were running first, then the queue in its fair order (see `start`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Mapping
from typing import Any

from gambar.errors import GambarError, InvalidInputError, shown
from gambar.inputs import Layout, decode_input
from gambar.inputs import check_names as check_input_names
from gambar.pipeline import MAX_PROMPT_CHARS, Pipeline, check_request
from gambar.seeding import MAX_SEED, check_seed, random_seed
from gambar.server.auth import fairness_group
from gambar.server.errors import ApiError
from gambar.server.jobs import (
    FINISHED,
    MAX_IMAGES,
    ImageRecord,
    Job,
    JobSpec,
    State,
    new_job_id,
)
from gambar.server.journal import JobJournal, Pending
from gambar.server.queue import FairQueue, QueueFull
from gambar.server.settings import ServerSettings
from gambar.server.store import ResultStore
from gambar.server.worker import JobCancelled, draw_job
from gambar.text.checks import check_encodable, check_prompt

log = logging.getLogger("gambar.server")

SWEEP_INTERVAL_S = 60.0  # an idle worker sweeps expired results this often
JOB_TIME_SMOOTHING = 0.2  # weight of the newest job in the running mean used for Retry-After


class JobService:
    """Owns the jobs. Thread-safe; the async `wait` is for request handlers."""

    def __init__(self, pipelines: Mapping[str, Pipeline], settings: ServerSettings) -> None:
        if not pipelines:
            raise InvalidInputError("no model to serve")
        self.pipelines = dict(pipelines)
        self.default_model = next(iter(self.pipelines))
        self.settings = settings
        self.store = ResultStore(settings.results_dir, keep_s=settings.keep_hours * 3600,
                                 max_bytes=int(settings.max_results_mb * 2**20))
        # Opened (and the folder locked) here, so `gambar serve` reports a folder another
        # server uses, or a corrupt journal, in one line before it starts listening.
        self.journal = JobJournal(settings.results_dir)
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._queue: FairQueue[str] = FairQueue(settings.queue_size, settings.per_client)
        self._jobs: dict[str, Job] = {}
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future]]] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._paused = False
        self._running = 0
        self._mean_job_s = 1.0
        self.jobs_run = 0  # generations started (a test checks none is lost or run twice)

    # ---- life cycle -------------------------------------------------------------------
    def start(self) -> None:
        """Load the results and the unfinished jobs of an earlier run; start the workers.

        Unfinished jobs queue again in submission order, bypassing the queue's bounds (they
        were accepted already): the fair queue takes its clients' turns from there, each
        client's jobs in its own order; jobs that were running when the server stopped go
        first. A job whose model is no longer served fails with a message saying so.
        """
        pending = self.journal.pending()
        for record in self.store.load_records(unfinished={p.id for p in pending}):
            try:
                job = Job.from_record(record)
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring an unreadable job record %s", record.get("id"))
                continue
            self._jobs[job.id] = job
        with self._lock:
            for item in pending:
                self._restore_locked(item)
            self._sweep()
        for k in range(self.settings.workers):
            thread = threading.Thread(target=self._work, name=f"gambar-worker-{k}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the workers and release the results folder.

        A running job stops at its next step; it and the queued jobs stay in the journal and
        run (from the start, with the same seeds) when a server starts on this folder again.
        """
        with self._lock:
            self._stopping = True
            self._wakeup.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        with self._lock:  # a worker still inside a step past the timeout only logs its updates
            self.journal.close()

    def pause(self) -> None:
        """Stop taking jobs out of the queue (running ones finish); submissions still queue."""
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        """Undo pause()."""
        with self._lock:
            self._paused = False
            self._wakeup.notify_all()

    # ---- requests -----------------------------------------------------------------------
    def model(self, name: str | None) -> tuple[str, Pipeline]:
        """A served model by name (None: the default); InvalidInputError naming the choices."""
        name = name or self.default_model
        pipe = self.pipelines.get(name)
        if pipe is None:
            raise InvalidInputError(f"no model named {shown(name)} is served here; choose one of: "
                                    f"{', '.join(self.pipelines)}")
        return name, pipe

    def make_spec(self, *, prompt: str, n: int = 1, seed: int | None = None,
                  model: str | None = None, options: Mapping[str, Any] | None = None,
                  inputs: Mapping[str, Any] | None = None,
                  output_size: int | None = None) -> JobSpec:
        """Check a request and resolve its defaults into a JobSpec.

        `options` are option names of the model's family (None values: the model's default),
        checked by the family's Options (the one place that knows them); `inputs` are input
        names with their request encoding (base64 image, layout JSON), decoded here once to
        refuse a bad one before it is queued."""
        name, pipe = self.model(model)
        check_prompt(prompt)  # the same rule as the CLI: something visible, valid Unicode
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidInputError(
                f"the prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
        if not 1 <= n <= MAX_IMAGES:
            raise InvalidInputError(f"n must be between 1 and {MAX_IMAGES}, not {n}")
        first = check_seed(seed) if seed is not None else random_seed()
        if first + n - 1 > MAX_SEED:
            raise InvalidInputError(f"seed + n - 1 must not exceed {MAX_SEED}")
        given = {k: v for k, v in (inputs or {}).items() if v is not None}
        check_input_names(given, pipe.inputs, pipe.family)
        decoded = {key: decode_input(key, value) for key, value in given.items()}
        # The checks generate() starts with, the family's own included (a mask without an
        # init image, a size the network cannot draw): refused now, not after the queue.
        opts, _ = check_request(pipe, [prompt], [first], None, options or {}, decoded, 1)
        resolved = opts.to_dict()
        for key, value in resolved.items():
            if isinstance(value, str):  # text goes into JSON, PNG chunks and tokenizers
                check_encodable(value, key)
        # A layout is kept in its canonical JSON; an image as the client encoded it.
        encoded = {key: value.to_json() if isinstance(value, Layout) else given[key]
                   for key, value in decoded.items()}
        return JobSpec(model=name, prompt=prompt, seeds=tuple(first + k for k in range(n)),
                       options=resolved, inputs=encoded, output_size=output_size)

    def submit(self, client: str, spec: JobSpec) -> Job:
        """Queue a job for `client`, recorded in the journal; QueueFull if there is no room."""
        job = Job(id=new_job_id(), client=client, spec=spec)
        with self._lock:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            self._queue.push(client, job.id, group=fairness_group(client))
            job.created = time.time()  # under the lock: the order of this and every pop is exact
            try:
                self.journal.add(job.id, client, spec.to_dict(), job.created)
            except sqlite3.Error as exc:  # disk full, folder gone: refuse rather than lose it
                self._queue.remove(client, job.id)
                log.error("cannot record job %s in %s: %s", job.id, self.journal.path, exc)
                raise ApiError(503, f"the server cannot record jobs right now ({exc}); try "
                                    "again later") from None
            self._jobs[job.id] = job
            self._wakeup.notify()
        return job

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None (unknown, or its results expired)."""
        with self._lock:
            return self._jobs.get(job_id)

    def jobs_of(self, client: str, limit: int = 50) -> list[Job]:
        """This client's jobs, newest first."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.client == client]
        return sorted(jobs, key=lambda j: j.created, reverse=True)[:limit]

    def position(self, job: Job) -> int | None:
        """1-based place in the queue (1 = next to run); None unless queued."""
        with self._lock:
            return self._queue.position(job.client, job.id)

    def queue_length(self) -> int:
        with self._lock:
            return len(self._queue)

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the time to work through today's queue."""
        with self._lock:
            waiting = len(self._queue) + self._running
            seconds = self._mean_job_s * waiting / self.settings.workers
        return max(1, min(3600, math.ceil(seconds)))

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job now, a running one at its next step; finished ones stay."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.state == State.QUEUED:
                self._queue.remove(job.client, job.id)
                self._finish_locked(job, State.CANCELLED, error="cancelled before it started")
            elif job.state == State.RUNNING:
                job.cancel_requested.set()
                # Out of the journal now, not when the worker notices at its next step: a crash
                # in between must not run again a job the client already cancelled.
                self._journal_locked("remove", job.id)
            return job

    def delete(self, job_id: str) -> bool:
        """Cancel a job if it is unfinished and delete it and its results; False if unknown."""
        job = self.cancel(job_id)
        if job is None:
            return False
        with self._lock:
            self._jobs.pop(job_id, None)
            if job.state in FINISHED:
                self.store.delete(job_id)
            # else it is running: the worker deletes what it wrote once it stops (see _run).
        return True

    async def wait(self, job: Job) -> Job:
        """Wait, without blocking the event loop, until `job` has finished."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        with self._lock:
            if job.state in FINISHED:
                return job
            self._waiters.setdefault(job.id, []).append((loop, future))
        try:
            await future
        finally:
            with self._lock:
                waiters = self._waiters.get(job.id, [])
                if (loop, future) in waiters:
                    waiters.remove((loop, future))
        return job

    def stats(self) -> dict[str, Any]:
        """Numbers for the health endpoint."""
        with self._lock:
            return {"queued": len(self._queue), "running": self._running,
                    "workers": self.settings.workers, "jobs_run": self.jobs_run,
                    "paused": self._paused}

    # ---- the worker side ----------------------------------------------------------------
    def _work(self) -> None:
        while (job := self._next_job()) is not None:
            self._run(job)

    def _next_job(self) -> Job | None:
        with self._lock:
            while True:
                if self._stopping:
                    return None
                job_id = None if self._paused else self._queue.pop()
                if job_id is not None:
                    job = self._jobs[job_id]
                    job.state, job.started = State.RUNNING, time.time()
                    self._journal_locked("started", job.id, job.started)
                    self._running += 1
                    self.jobs_run += 1
                    return job
                if not self._wakeup.wait(timeout=SWEEP_INTERVAL_S):
                    self._sweep()

    def _progress(self, job: Job, done: int, total: int) -> None:
        with self._lock:
            job.step, job.total_steps = done, total

    def _run(self, job: Job) -> None:
        images: list[ImageRecord] = []
        error, user_mistake, state = None, False, State.DONE
        try:
            # Stopping interrupts a job too, but leaves it in the journal (see below).
            outputs = draw_job(self.pipelines[job.spec.model], job.spec,
                               progress=lambda d, t: self._progress(job, d, t),
                               cancelled=lambda: job.cancel_requested.is_set() or self._stopping)
            for k, (png, prov) in enumerate(outputs):
                name = self.store.write_image(job.id, k, png)
                images.append(ImageRecord(index=k, seed=job.spec.seeds[k], file=name,
                                          provenance=prov))
        except JobCancelled:
            if not job.cancel_requested.is_set():  # the server is stopping: it runs on restart
                with self._lock:
                    self._running -= 1
                    job.state, job.started, job.step, job.total_steps = State.QUEUED, None, 0, 0
                return
            state, error = State.CANCELLED, "cancelled while running"
        except GambarError as exc:  # an option this model cannot do (e.g. a size it rejects)
            state, error, user_mistake = State.FAILED, str(exc), True
        except Exception as exc:  # a bug: keep serving, log the traceback, tell the client
            log.exception("job %s failed", job.id)
            state, error = State.FAILED, f"internal error: {type(exc).__name__}: {exc}"
        with self._lock:
            self._running -= 1
            elapsed = time.time() - (job.started or time.time())
            self._mean_job_s += JOB_TIME_SMOOTHING * (elapsed - self._mean_job_s)
            job.images = images
            job.error_is_user_mistake = user_mistake
            self._finish_locked(job, state, error=error)
            if job.id not in self._jobs:  # deleted while it ran
                self.store.delete(job.id)
            self._sweep()

    def _finish_locked(self, job: Job, state: State, *, error: str | None = None) -> None:
        job.state, job.error, job.finished = state, error, time.time()
        if job.id in self._jobs:
            self.store.write_record(job.id, job.record(), job.finished)
        # After the record: a crash between the two leaves a row whose record exists, which
        # start() drops; never a finished job without a record.
        self._journal_locked("remove", job.id)
        job.done.set()
        for loop, future in self._waiters.pop(job.id, []):
            with contextlib.suppress(RuntimeError):  # its event loop has closed: nobody waits
                loop.call_soon_threadsafe(_resolve, future)

    def _journal_locked(self, action: str, job_id: str, *args: Any) -> None:
        """A journal update from a worker: logged if it fails, the job goes on regardless."""
        try:
            getattr(self.journal, action)(job_id, *args)
        except sqlite3.Error as exc:
            log.error("cannot update job %s in %s: %s", job_id, self.journal.path, exc)

    def _restore_locked(self, item: Pending) -> None:
        """Queue an unfinished job read back from the journal (see `start`)."""
        if item.id in self._jobs:  # its record was written; only the journal row was left
            self._journal_locked("remove", item.id)
            return
        try:
            spec = JobSpec.from_dict(item.spec)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.error("dropping unreadable job %s from %s: %s", item.id, self.journal.path, exc)
            self.journal.remove(item.id)
            return
        job = Job(id=item.id, client=item.client, spec=spec, created=item.created)
        self._jobs[job.id] = job
        if spec.model not in self.pipelines:
            job.error_is_user_mistake = True
            self._finish_locked(job, State.FAILED, error=(
                f"the server restarted without the model {spec.model!r}; submit the job again "
                f"with one of: {', '.join(self.pipelines)}"))
            return
        self._queue.restore(job.client, job.id, group=fairness_group(job.client),
                            first=item.was_running)

    def _sweep(self) -> None:
        """Forget jobs whose results the store removed (expired, or over the size limit)."""
        unfinished = [j.id for j in self._jobs.values() if j.state not in FINISHED]
        for job_id in self.store.sweep(keep=unfinished):
            self._jobs.pop(job_id, None)


def _resolve(future: asyncio.Future) -> None:
    if not future.done():  # the waiting request may have been cancelled meanwhile
        future.set_result(None)
