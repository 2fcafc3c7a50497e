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

# Limits on one job, the same whichever API it came through. They bound the time and memory
# one request can take: a CPU draws a 64 px image in ~1 s at 20 steps.
MAX_IMAGES = 16
MAX_STEPS = 150
MAX_SIZE = 256  # the side a model draws at; the compatible APIs may resize up to 1024
MAX_PROMPT_CHARS = 500
MAX_GUIDANCE = 50.0


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
    """Everything a worker needs to draw a job's images, with every default already resolved."""

    model: str
    prompt: str
    negative_prompt: str
    seeds: tuple[int, ...]
    steps: int
    guidance: float
    sampler: str
    size: int  # the side the model draws at
    output_size: int | None = None  # resize to this side afterwards (compat APIs); None = no
    eta: float | None = None  # DDIM/ancestral noise; None = the sampler's own default

    def generate_options(self) -> dict[str, Any]:
        """Keyword arguments for Pipeline.generate."""
        options: dict[str, Any] = {"negative_prompt": self.negative_prompt, "steps": self.steps,
                                   "guidance": self.guidance, "sampler": self.sampler,
                                   "size": self.size}
        if self.eta is not None:
            options["eta"] = self.eta
        return options

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (settings shown to clients and stored with results)."""
        out = asdict(self)
        out["seeds"] = list(self.seeds)
        out["n"] = len(self.seeds)
        out["seed"] = self.seeds[0]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """Inverse of to_dict (for records read back from the results folder)."""
        names = cls.__dataclass_fields__
        values = {k: v for k, v in data.items() if k in names}
        values["seeds"] = tuple(int(s) for s in values["seeds"])
        return cls(**values)


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
