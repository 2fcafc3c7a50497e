"""The FastAPI application: gambar's API, the OpenAI and A1111 dialects, the page, the docs.

Build it with `create_app(JobService(...))`; `gambar serve` runs it under uvicorn. The job
service's worker threads start and stop with the app (its lifespan).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

import gambar
from gambar.server import compat_a1111, compat_a1111_img2img, compat_openai, routes
from gambar.server.auth import CHALLENGE, authorized
from gambar.server.body_limit import BodyLimit
from gambar.server.errors import error_response, install_error_handlers
from gambar.server.schemas import job_request_model
from gambar.server.service import JobService

STATIC = Path(__file__).parent / "static"
# The page loads nothing from elsewhere; saying so stops injected scripts and remote loads.
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
            "script-src 'self'; connect-src 'self'; frame-ancestors 'none'")

DESCRIPTION = """
Text-to-image on a CPU, offline. Submit a job, poll its status (queue position, step k of K),
fetch its PNGs (provenance in their text chunks; a clip of several frames is an animated PNG).
Each model's options (defaults, bounds, choices) and inputs (a layout, an init image ...) are
listed by `GET /api/models` and in the job request's schema below; an option or input the
chosen model lacks is answered 422 naming it. Jobs are served **round-robin**: between
tokens, or between addresses for clients without one, and within an address between its
`X-Client-Id`s. Each token or address may have `--per-client` jobs waiting, shared by the ids
within it; a full queue answers 429 with `Retry-After`. A client rotating
`X-Client-Id` therefore gains nothing; where several users share an address (a proxy), give
each a token (`--token` is repeatable).

Jobs are recorded on disk before they are acknowledged: a server that stops or crashes runs its
queued and running jobs again when it restarts on the same results folder (same seeds, same
pixels). Request bodies over the server's limit (1 MiB by default) are answered 413.

When the server has a token, every endpoint but `/api/health` needs
`Authorization: Bearer <token>` (or HTTP Basic with the token as password, which is how a
browser opens the page).

Also spoken: OpenAI Images (`POST /v1/images/generations`) and AUTOMATIC1111
(`POST /sdapi/v1/txt2img`, `/img2img`). A size the model's cascade draws (128, 256 for the
default model) is drawn by its super-resolution stages; any other size is drawn at the nearest
such size and resized with Lanczos; responses say so.
"""


def _swagger_assets() -> Path | None:
    """Swagger UI's files from the swagger-ui-bundle-v2 package (the docs work offline)."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    path = Path(str(swagger_ui_path))
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def create_app(service: JobService) -> FastAPI:
    """The ASGI app serving `service`'s models."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            # Joining the workers blocks; keep the event loop free while a job winds down.
            await asyncio.to_thread(service.stop)

    app = FastAPI(title="gambar", version=gambar.__version__, description=DESCRIPTION,
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.service = service
    install_error_handlers(app)
    tokens = service.settings.tokens

    @app.middleware("http")
    async def _auth(request: Request,
                    call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not authorized(request, tokens):
            return error_response(request, 401, "this server needs a token: send "
                                  "'Authorization: Bearer <token>'",
                                  headers={"WWW-Authenticate": CHALLENGE})
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    # Added last, so outermost: a huge body is refused before anything reads it.
    app.add_middleware(BodyLimit, max_bytes=service.settings.max_body_kb * 1024)

    # The job request's schema comes from the served models' options (and documents them);
    # kept on the app for tools that build bodies from it (benchmarks/fuzz.py).
    app.state.job_request = job_request_model(service.pipelines)
    app.include_router(routes.submit_router(app.state.job_request))
    app.include_router(routes.router)
    app.include_router(routes.open_router)
    app.include_router(compat_openai.openai_router(service.pipelines))
    app.include_router(compat_a1111.router)
    app.include_router(compat_a1111_img2img.router)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html",
                            headers={"Content-Security-Policy": PAGE_CSP,
                                     "Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    assets = _swagger_assets()
    if assets is not None:
        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if assets is None:  # still useful: the schema itself is always there
            return HTMLResponse('<p>Install swagger-ui-bundle-v2 for this page; the API schema '
                                'is at <a href="/openapi.json">/openapi.json</a>.</p>')
        return get_swagger_ui_html(openapi_url="/openapi.json", title="gambar API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/static/favicon.svg")

    return app
