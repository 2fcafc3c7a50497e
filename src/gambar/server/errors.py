"""Error responses: one line a person can act on, in the shape each API's clients expect.

gambar's own API and the A1111 one answer {"error": "...", "detail": ...}; the OpenAI one
answers {"error": {"message": "...", "type": ...}}, which the `openai` package turns into an
exception carrying the message.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gambar.errors import GambarError
from gambar.server.queue import QueueFull

OPENAI_PREFIX = "/v1/"



class ApiError(Exception):
    """An error with an HTTP status, raised by handlers and turned into a response."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.param = status, message, headers, param


def error_response(request: Request, status: int, message: str, *, detail: Any = None,
                   param: str | None = None, headers: dict[str, str] | None = None
                   ) -> JSONResponse:
    """The error body for the API that `request` went to."""
    if request.url.path.startswith(OPENAI_PREFIX):
        kind = {401: "authentication_error", 404: "not_found_error",
                429: "rate_limit_error"}.get(status, "invalid_request_error")
        if status >= 500:
            kind = "server_error"
        body: dict[str, Any] = {"error": {"message": message, "type": kind, "param": param,
                                          "code": None}}
    else:
        body = {"error": message, "detail": detail}
    return JSONResponse(body, status_code=status, headers=headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "request"


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "the request is not valid", None
    first = errors[0]
    if first.get("type") == "json_invalid":  # its loc is a character offset, not a field
        return f"the request body is not valid JSON (at character {first['loc'][-1]})", None
    field = _field(first.get("loc", ()))
    msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    if field == "job_id":
        msg = "not a job id (job ids are 32 lowercase hex digits)"
    extra = len(errors) - 1
    more = f" (and {extra} more problem{'s' if extra > 1 else ''})" if extra else ""
    return f"{field}: {msg}{more}", field


def install_error_handlers(app: FastAPI) -> None:
    """Map validation errors, user mistakes, a full queue and HTTP errors to one-line bodies."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = _validation_message(exc)
        # OpenAI answers 400 for a bad parameter; its clients expect that status.
        status = 400 if request.url.path.startswith(OPENAI_PREFIX) else 422
        detail = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()]
        return error_response(request, status, message, detail=detail, param=field)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.message, param=exc.param,
                              headers=exc.headers)

    @app.exception_handler(GambarError)
    async def _user_mistake(request: Request, exc: GambarError) -> JSONResponse:
        status = 400 if request.url.path.startswith(OPENAI_PREFIX) else 422
        return error_response(request, status, str(exc))

    @app.exception_handler(QueueFull)
    async def _full(request: Request, exc: QueueFull) -> JSONResponse:
        retry = str(request.app.state.service.retry_after())
        return error_response(request, 429, f"{exc}; retry in {retry} s",
                              headers={"Retry-After": retry})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return error_response(request, exc.status_code, message,
                              headers=getattr(exc, "headers", None))
