"""gambar's own REST API under /api: submit, status with progress, images, cancel, models."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import FileResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel

import gambar
from gambar.inputs import INPUTS
from gambar.server.auth import client_key
from gambar.server.errors import ApiError
from gambar.server.jobs import JOB_ID_PATTERN, MAX_IMAGES, Job, State
from gambar.server.schemas import (
    COMMON_FIELDS,
    ErrorOut,
    Health,
    ImageOut,
    JobList,
    JobOut,
    JobSettings,
    Limits,
    ModelList,
    Progress,
    model_out,
)
from gambar.server.service import JobService

JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="a job id (32 hex digits)")]
Client = Annotated[str, Depends(client_key)]
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or wrong token"},
    422: {"model": ErrorOut, "description": "an option is missing or out of range"}}

# HTTPBearer here only documents the token in the schema (Swagger's "Authorize" button); the
# app's middleware enforces it, for every path but /api/health.
bearer = HTTPBearer(auto_error=False, description="only when the server was given a token")
router = APIRouter(prefix="/api", tags=["gambar"], responses=ERRORS,
                   dependencies=[Depends(bearer)])
open_router = APIRouter(prefix="/api", tags=["gambar"])


def service_of(request: Request) -> JobService:
    return request.app.state.service


Service = Annotated[JobService, Depends(service_of)]


def image_url(job_id: str, index: int) -> str:
    """Where a job's image is served (relative to the server's root)."""
    return f"/api/jobs/{job_id}/images/{index}.png"


def job_out(job: Job, service: JobService) -> JobOut:
    """The public view of a job."""
    total = job.total_steps
    step = total if job.state == State.DONE else job.step
    fraction = 1.0 if job.state == State.DONE else (step / total if total else 0.0)
    return JobOut(
        id=job.id, state=job.state,
        queue_position=service.position(job) if job.state == State.QUEUED else None,
        progress=Progress(step=step, steps=total, fraction=round(fraction, 4)),
        settings=JobSettings(**job.spec.settings()),
        images=[ImageOut(index=im.index, seed=im.seed, url=image_url(job.id, im.index),
                         provenance=im.provenance) for im in job.images],
        error=job.error, created=job.created, started=job.started, finished=job.finished,
        url=f"/api/jobs/{job.id}",
    )


def find(service: JobService, job_id: str) -> Job:
    job = service.get(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id}: it never existed, was deleted, or its results "
                            "expired")
    return job


@open_router.get("/health", response_model=Health, summary="Is the server up (no token needed)")
def health(service: Service) -> Health:
    return Health(status="ok", version=gambar.__version__,
                  auth=bool(service.settings.tokens), queue=service.stats())


@router.get("/models", response_model=ModelList, summary="The models this server draws with")
def models(service: Service) -> ModelList:
    return ModelList(
        models=[model_out(name, pipe, default=name == service.default_model)
                for name, pipe in service.pipelines.items()],
        limits=Limits())


def submit_router(request_model: type[BaseModel]) -> APIRouter:
    """POST /api/jobs, whose body is `request_model` (schemas.job_request_model: built from the
    served models' options when the app is made, so it has its own router)."""
    jobs = APIRouter(prefix="/api", tags=["gambar"], responses=ERRORS,
                     dependencies=[Depends(bearer)])

    def submit(body: BaseModel, response: Response, client: Client,
               service: Service) -> JobOut:
        """Queue a job and answer at once with its id; poll GET /api/jobs/{id} for progress.

        Options a request leaves out take the model's defaults (GET /api/models). Jobs are
        served round-robin between clients (token, else X-Client-Id, else address).
        """
        fields = body.model_dump()
        common = {name: fields.pop(name) for name in COMMON_FIELDS}
        inputs = {name: fields.pop(name) for name in INPUTS if name in fields}
        spec = service.make_spec(**common, options=fields, inputs=inputs)
        job = service.submit(client, spec)
        response.headers["Location"] = f"/api/jobs/{job.id}"
        return job_out(job, service)

    # FastAPI reads the body's type from the annotation; this one exists only now.
    submit.__annotations__["body"] = request_model
    jobs.add_api_route("/jobs", submit, methods=["POST"], status_code=202,
                       response_model=JobOut, summary="Submit a job",
                       responses={429: {"model": ErrorOut, "description":
                                        "queue full; retry after Retry-After seconds"}})
    return jobs


@router.get("/jobs", response_model=JobList, summary="Your recent jobs, newest first")
def list_jobs(client: Client, service: Service) -> JobList:
    return JobList(jobs=[job_out(j, service) for j in service.jobs_of(client)])


@router.get("/jobs/{job_id}", response_model=JobOut, summary="A job's state and progress",
            responses={404: {"model": ErrorOut}})
def status(job_id: JobId, service: Service) -> JobOut:
    """State, step k of K, queue position and, once done, the image URLs with provenance."""
    return job_out(find(service, job_id), service)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, summary="Cancel a job",
             responses={404: {"model": ErrorOut}})
def cancel(job_id: JobId, service: Service) -> JobOut:
    """A queued job is cancelled at once, a running one at its next step; finished ones stay."""
    job = service.cancel(job_id) or find(service, job_id)
    return job_out(job, service)


@router.delete("/jobs/{job_id}", status_code=204, summary="Cancel a job and delete its images",
               responses={404: {"model": ErrorOut}})
def delete(job_id: JobId, service: Service) -> Response:
    if not service.delete(job_id):
        find(service, job_id)
    return Response(status_code=204)


@router.get("/jobs/{job_id}/images/{index}.png", summary="One image (PNG with provenance)",
            response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorOut}})
def image(job_id: JobId, index: Annotated[int, Path(ge=0, lt=MAX_IMAGES)],
          service: Service) -> FileResponse:
    job = find(service, job_id)
    path = service.store.image_path(job_id, index) if job.state == State.DONE else None
    if path is None:
        raise ApiError(404, f"job {job_id} has no image {index} (state: {job.state})")
    seed = job.spec.seeds[index]
    # Images never change once written, so browsers may keep them.
    return FileResponse(path, media_type="image/png", filename=f"gambar-{seed}.png",
                        content_disposition_type="inline",
                        headers={"Cache-Control": "private, max-age=86400, immutable"})
