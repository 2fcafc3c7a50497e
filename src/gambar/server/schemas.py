"""Request and response bodies of gambar's own API (/api/...).

The job request is built from the served models' Options when the app is made: the server
names no option itself. A request with an unknown field, a wrong type, an out-of-range value
or an option its model lacks is answered 422 with the field and the reason, before it reaches
the queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model, field_validator

from gambar.inputs import INPUTS
from gambar.options import KINDS, OptionSpec, union_specs
from gambar.pipeline import MAX_PROMPT_CHARS, Pipeline
from gambar.seeding import MAX_SEED
from gambar.server.jobs import MAX_IMAGES, State

# Fields of every request, whatever the model.
COMMON_FIELDS = ("prompt", "n", "seed", "model")
# Names an option may not take: they are request fields or keys of a job's flat settings.
RESERVED = (*COMMON_FIELDS, "seeds", "output_size", "inputs", *INPUTS)


class JobRequestBase(BaseModel):
    """A request to draw `n` images of one prompt. Omitted options take the model's defaults.

    The served models' options and inputs are added to this when the app is built
    (`job_request_model`)."""

    # allow_inf_nan=False: NaN and Infinity (which Python's JSON parser reads) are refused by
    # name, not by a confusing range message.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={
        "examples": [{"prompt": "a red circle above a blue square", "n": 2, "seed": 7}]})

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS,
                        description="what to draw, in English or Indonesian")
    n: int = Field(1, ge=1, le=MAX_IMAGES, description="how many images (seeds seed .. seed+n-1)")
    seed: int | None = Field(None, ge=0, le=MAX_SEED,
                             description="seed of the first image; omitted: random, recorded")
    model: str | None = Field(None, max_length=200, description="a served model's name")

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError('the prompt is blank; give a description, e.g. "a red circle"')
        return value


def served_options(pipelines: Mapping[str, Pipeline]
                   ) -> dict[str, tuple[OptionSpec, dict[str, OptionSpec]]]:
    """Every option name of the served models -> (its spec merged over them, {family: its spec
    there} for each family that has it)."""
    classes = {pipe.family: pipe.Options for pipe in pipelines.values()}
    specs = {family: {s.name: s for s in cls.specs()} for family, cls in classes.items()}
    return {name: (merged, {f: specs[f][name] for f in families})
            for name, (merged, families) in union_specs(classes).items()}


def _option_type(spec: OptionSpec) -> Any:
    """An option's field type: its kind within the bounds of its spec merged over the served
    families (gambar.options.union_specs: the widest; each model checks its own when the job
    is made, and lists its own choices)."""
    limits: dict[str, Any] = {}
    if spec.low is not None:
        limits["ge"] = spec.low
    if spec.high is not None:
        limits["le"] = spec.high
    if spec.max_chars is not None:
        limits["max_length"] = spec.max_chars
    kind: Any = Annotated[KINDS[spec.kind], Field(**limits)]
    if spec.choices:
        kind = Annotated[kind, WithJsonSchema({"type": "string", "enum": list(spec.choices)})]
    return kind


def _option_help(specs: dict[str, OptionSpec], all_families: set[str]) -> str:
    """Its help text (each family's, where they differ), and which families have it."""
    helps = {family: spec.help.rstrip(".") for family, spec in specs.items()}
    text = next(iter(helps.values())) if len(set(helps.values())) == 1 else "; ".join(
        f"{family} models: {text}" for family, text in helps.items())
    where = "" if set(specs) == all_families else f" Only {', '.join(specs)} models."
    return f"{text}.{where} Omitted: the model's default (GET /api/models)."


def job_request_model(pipelines: Mapping[str, Pipeline]) -> type[BaseModel]:
    """The body of POST /api/jobs for these models: the common fields, one optional field per
    option of any served family (its type, bounds, choices and help from the family's Options),
    one per input any served model takes. The field bounds are the widest of the families that
    have the option, so nothing absurd gets further; the chosen model's Options check the values
    against its own (`JobService.make_spec`), and refuse by name an option it lacks."""
    every = {p.family for p in pipelines.values()}
    inputs = sorted({name for pipe in pipelines.values() for name in pipe.inputs})
    fields: dict[str, Any] = {}
    for name, (merged, specs) in served_options(pipelines).items():
        if name in RESERVED:
            raise TypeError(f"option {name!r} of {next(iter(specs))} models clashes with a "
                            "request or settings field of the same name")
        fields[name] = (_option_type(merged) | None,
                        Field(None, description=_option_help(specs, every)))
    for name in inputs:
        # A layout is JSON in the body; an image, base64 text.
        kind, how = ((list[dict[str, Any]] | None, "") if name == "layout" else
                     (str | None, "; a base64-encoded PNG or JPEG, or a data: URL"))
        takers = sorted({p.family for p in pipelines.values() if name in p.inputs})
        fields[name] = (kind, Field(None, description=f"{INPUTS[name]}{how}. Taken by "
                                    f"{', '.join(takers)} models."))
    return create_model("JobRequest", __base__=JobRequestBase,
                        __doc__=JobRequestBase.__doc__, **fields)


class JobSettings(BaseModel):
    """A job's settings with every default resolved: submit these again to redraw it. Each of
    the model's options is a top-level key beside these (GET /api/models lists them)."""

    model_config = ConfigDict(extra="allow")

    model: str
    prompt: str
    n: int
    seed: int
    seeds: list[int]
    output_size: int | None = Field(None, description="resized to this side after drawing")
    inputs: list[str] = Field(default_factory=list,
                              description="the inputs given (their sha256 is in provenance)")


class Progress(BaseModel):
    step: int = Field(description="steps done (in the unit the model counts)")
    steps: int = Field(description="steps in all (0 until the job starts)")
    fraction: float = Field(ge=0, le=1)


class ImageOut(BaseModel):
    index: int
    seed: int
    url: str = Field(description="the PNG, with its provenance in text chunks")
    provenance: dict[str, Any]


class JobOut(BaseModel):
    """A job's state. Poll it until `state` is done, failed or cancelled."""

    id: str
    state: State
    queue_position: int | None = Field(description="1 = next to run; null unless queued")
    progress: Progress
    settings: JobSettings
    images: list[ImageOut]
    error: str | None
    created: float
    started: float | None
    finished: float | None
    url: str


class JobList(BaseModel):
    jobs: list[JobOut]


class OptionOut(BaseModel):
    """One option of a model, as its family's Options declares it."""

    name: str
    kind: Literal["int", "float", "str", "bool"]
    default: Any = Field(description="this model's default")
    low: float | None
    high: float | None
    choices: list[str] | None
    max_chars: int | None
    help: str


class ModelOut(BaseModel):
    name: str
    family: str
    sha256: str
    default: bool = Field(description="used when a request names no model")
    defaults: dict[str, Any] = Field(description="this model's default for each option")
    options: list[OptionOut] = Field(description="the options a request may set for it")
    inputs: list[str] = Field(description="the inputs it takes besides the prompt")


def model_out(name: str, pipe: Pipeline, *, default: bool) -> ModelOut:
    """A served model as GET /api/models describes it."""
    defaults = pipe.default_options.to_dict()
    options = [OptionOut(name=s.name, kind=s.kind, default=defaults[s.name], low=s.low,
                         high=s.high, choices=list(s.choices) if s.choices else None,
                         max_chars=s.max_chars, help=s.help) for s in pipe.Options.specs()]
    return ModelOut(name=name, family=pipe.family, sha256=pipe.sha256, default=default,
                    defaults=defaults, options=options, inputs=sorted(pipe.inputs))


class Limits(BaseModel):
    """Limits of every request; each option's bounds are with its model."""

    max_images: int = MAX_IMAGES
    max_prompt_chars: int = MAX_PROMPT_CHARS


class ModelList(BaseModel):
    models: list[ModelOut]
    limits: Limits


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    auth: bool = Field(description="whether the API needs a token")
    queue: dict[str, Any]


class ErrorOut(BaseModel):
    error: str = Field(description="one line saying what is wrong and how to fix it")
    detail: Any = None
