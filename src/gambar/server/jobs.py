"""A job: what to draw (JobSpec, fixed at submission) and how far it got (Job, changes)."""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

# Job ids are uuid4 hex: 122 random bits, so an id is also an unguessable handle to its images,
# and the strict pattern keeps anything but 32 hex digits away from the results folder.
JOB_ID_PATTERN = r"^[0-9a-f]{32}$"
_JOB_ID = re.compile(JOB_ID_PATTERN)

# Images per job, whichever API it came through: with the model's own option bounds (steps,
# size ...) it bounds the time and memory one request can take.
MAX_IMAGES = 16
# Spec keys of the format before options were one dict (diffusion's options, flat beside the
# prompt). Records and journal rows written then are read by folding these into `options`.
LEGACY_OPTION_KEYS = ("negative_prompt", "steps", "guidance", "sampler", "size", "eta")


def new_job_id() -> str:
    """A fresh random job id (uuid4 hex)."""
    return uuid.uuid4().hex


def is_job_id(text: str) -> bool:
    """True if `text` has the shape of a job id (and so is safe as a folder name)."""
    return bool(_JOB_ID.fullmatch(text))


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({State.DONE, State.FAILED, State.CANCELLED})


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to draw a job's images, with every default already resolved.

    `options` are the model's options (its Options class's names, JSON values) after the
    request's changes; `inputs` are the request's inputs as it encoded them (base64 image,
    layout JSON), so the journal can run the job again after a restart."""

    model: str
    prompt: str
    seeds: tuple[int, ...]
    options: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)
    output_size: int | None = None  # resize to this side afterwards (compat APIs); None = no

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the journal and with results)."""
        return {"model": self.model, "prompt": self.prompt, "seeds": list(self.seeds),
                "n": len(self.seeds), "seed": self.seeds[0], "options": dict(self.options),
                "inputs": dict(self.inputs), "output_size": self.output_size}

    def settings(self) -> dict[str, Any]:
        """What clients see: the common fields, each option as a top-level key (so settings
        submitted again redraw the job), and the names of the inputs (not their content)."""
        out = self.to_dict()
        options = out.pop("options")
        out["inputs"] = sorted(self.inputs)
        return {**out, **options}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """Inverse of to_dict, also for records of the older flat format."""
        options = dict(data["options"]) if "options" in data else {
            k: data[k] for k in LEGACY_OPTION_KEYS if data.get(k) is not None}
        output_size = data.get("output_size")
        return cls(model=str(data["model"]), prompt=str(data["prompt"]),
                   seeds=tuple(int(s) for s in data["seeds"]), options=options,
                   inputs=dict(data.get("inputs") or {}),
                   output_size=None if output_size is None else int(output_size))


@dataclass
class ImageRecord:
    """One finished image: where it is on disk (relative to its job folder) and its provenance."""

    index: int
    seed: int
    file: str
    provenance: dict[str, Any]


@dataclass
class Job:
    """One submission: n images of one prompt. Mutated only under the job service's lock."""

    id: str
    client: str
    spec: JobSpec
    state: State = State.QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    step: int = 0
    total_steps: int = 0
    error: str | None = None
    error_is_user_mistake: bool = False  # a bad option (4xx) rather than a server bug (5xx)
    images: list[ImageRecord] = field(default_factory=list)
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def record(self) -> dict[str, Any]:
        """JSON-ready form written beside the images, enough to serve the job after a restart."""
        return {
            "id": self.id, "client": self.client, "spec": self.spec.to_dict(),
            "state": str(self.state), "created": self.created, "started": self.started,
            "finished": self.finished, "error": self.error,
            "error_is_user_mistake": self.error_is_user_mistake,
            "images": [asdict(im) for im in self.images],
        }

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Job:
        """Inverse of record(); the job is finished, so its events are set."""
        job = cls(id=data["id"], client=data["client"], spec=JobSpec.from_dict(data["spec"]),
                  state=State(data["state"]), created=data["created"], started=data["started"],
                  finished=data["finished"], error=data.get("error"),
                  error_is_user_mistake=bool(data.get("error_is_user_mistake")),
                  images=[ImageRecord(**im) for im in data.get("images", [])])
        job.done.set()
        return job
