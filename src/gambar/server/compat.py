"""What the OpenAI and A1111 dialects share: refusing options they cannot honour, the native
size they resize from, and running a job to the end for APIs whose clients wait for the images
in one request.

The rule: an option that leaves the result unchanged (a client's default that means "off") is
accepted; an option that would change the result and cannot be honoured is answered 4xx
naming it, never silently ignored. That holds per model: a field that maps onto an option the
chosen model's family lacks (steps for a GAN) is accepted only when off; each dialect says
which values count as off for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import Request

from gambar.errors import InvalidInputError, shown
from gambar.inputs import INPUTS
from gambar.pipeline import Pipeline
from gambar.server.auth import client_key
from gambar.server.errors import ApiError
from gambar.server.jobs import Job, JobSpec, State
from gambar.server.service import JobService


def is_off(value: Any) -> bool:
    """Whether an option's value means "not used" (None, False, 0, '', [], {})."""
    return value is None or value is False or value == 0 or value in ("", [], {})


def require(name: str, value: Any, allowed: Iterable[Any], why: str) -> None:
    """InvalidInputError unless `value` is one of `allowed` (or off)."""
    if not is_off(value) and value not in tuple(allowed):
        raise InvalidInputError(f"{name}={shown(value)} cannot be honoured: {why}")


def reject_unknown(extras: Mapping[str, Any] | None, ignored: Iterable[str] = ()) -> None:
    """Refuse options this server does not know unless they are off (or known to be inert)."""
    skip = set(ignored)
    for name, value in (extras or {}).items():
        if name not in skip and not is_off(value):
            raise InvalidInputError(
                f"option {shown(name)} is not supported by gambar and would change the result; "
                "leave it out")


def extensions(pipe: Pipeline, extras: Mapping[str, Any] | None
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(options, inputs) named by a dialect's extra fields: the model's options and inputs.

    An extra that is off (see is_off) and names nothing the model has is dropped; any other is
    kept as an option, so the model's Options refuse it by name ("option 'steps' does not apply
    to ... (gan model); its options are: size")."""
    names = pipe.Options.names()
    options, inputs = {}, {}
    for key, value in (extras or {}).items():
        if key in names:
            options[key] = value
        elif is_off(value):
            continue
        elif key in INPUTS:
            inputs[key] = value
        else:
            options[key] = value
    return options, inputs


def native_size(name: str, pipe: Pipeline) -> int:
    """The side a model draws at by default (its `size` option's default): the dialects draw at
    it and resize to the size a client asks for."""
    if "size" not in pipe.Options.names():
        raise InvalidInputError(
            f"model {name!r} ({pipe.family}) has no 'size' option, so this API cannot size its "
            "images; use POST /api/jobs")
    return int(pipe.default_options.size)  # type: ignore[attr-defined]


def drawing_size(pipe: Pipeline, native: int, side: int) -> int:
    """The size a request for `side` is drawn at: the native size, or a size the model's
    cascade draws (its super-resolution stages fill in the detail); the smallest that is at
    least `side`, else the largest. Only what is left is resized."""
    from gambar.generators.diffusion.cascade import cascade_sizes

    sizes = sorted({native, *cascade_sizes(pipe)})
    return next((s for s in sizes if s >= side), sizes[-1])


async def run_to_end(request: Request, spec: JobSpec) -> Job:
    """Queue a job for the requesting client and wait for it (the worker draws it).

    If the client hangs up meanwhile, the job still finishes and stays fetchable by id
    through /api/jobs (its X-Client-Id or token finds it in GET /api/jobs).
    """
    service: JobService = request.app.state.service
    # submit() syncs the job to the journal under the service lock: off the event loop, so
    # other requests are not held up by a worker's disk writes.
    job = await asyncio.to_thread(service.submit, client_key(request), spec)
    await service.wait(job)
    if job.state == State.DONE:
        return job
    if job.state == State.CANCELLED:
        raise ApiError(409, f"job {job.id} was cancelled ({job.error})")
    if job.error_is_user_mistake:
        raise InvalidInputError(job.error or "the request cannot be drawn")
    raise ApiError(500, job.error or f"job {job.id} failed")


def read_pngs(service: JobService, job: Job) -> list[bytes]:
    """The PNG bytes of a finished job's images, in order."""
    out = []
    for im in job.images:
        path = service.store.image_path(job.id, im.index)
        if path is None:  # swept between finishing and reading: only under a tiny size limit
            raise ApiError(500, f"the images of job {job.id} were removed before they could be "
                                "sent; raise --max-results-mb")
        out.append(path.read_bytes())
    return out
