"""`gambar serve`: load the models, build the app, run it under uvicorn."""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
from pathlib import Path

from gambar.errors import InvalidInputError
from gambar.fsutil import check_writable
from gambar.pipeline import Pipeline, load

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def load_models(names: list[str]) -> dict[str, Pipeline]:
    """Load each model once, keyed by its name; the first is the default."""
    pipelines: dict[str, Pipeline] = {}
    for name in names:
        pipe = load(name)
        if pipe.name in pipelines:
            raise InvalidInputError(f"two models are called {pipe.name!r}; serve one of them, or "
                                    "rename a model directory")
        pipelines[pipe.name] = pipe
    return pipelines


def _check_port_free(host: str, port: int) -> None:
    """A one-line error now rather than uvicorn's log line after the models have loaded."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InvalidInputError(
                    f"port {port} on {host} is already in use; pass --port with a free one"
                ) from None
            raise InvalidInputError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


def run_serve(args: argparse.Namespace) -> None:
    """Serve until interrupted."""
    from gambar.server.journal import JOURNAL
    from gambar.server.settings import ServerSettings, default_results_dir, tokens_from_env

    if not 0 < args.port < 65536:
        raise InvalidInputError(f"--port must be between 1 and 65535, not {args.port}")
    tokens = tuple(args.token) if args.token else tokens_from_env()
    if any(not t.strip() for t in tokens):
        raise InvalidInputError("--token must not be empty")
    settings = ServerSettings(
        results_dir=Path(args.results) if args.results else default_results_dir(),
        tokens=tokens, queue_size=args.queue_size, per_client=args.per_client,
        workers=args.workers, keep_hours=args.keep_hours, max_results_mb=args.max_results_mb,
        max_body_kb=args.max_body_kb)
    check_writable(settings.results_dir / JOURNAL)  # before any model loads
    _check_port_free(args.host, args.port)
    if args.threads is not None:
        import torch

        # More threads than cores only slows torch down; a huge number fails inside it.
        cores = os.cpu_count() or 1
        if not 1 <= args.threads <= cores:
            raise InvalidInputError(
                f"--threads must be between 1 and {cores} (this machine's cores), not "
                f"{args.threads}")
        torch.set_num_threads(args.threads)
    pipelines = load_models(args.model or ["default"])

    import uvicorn

    from gambar.server.app import create_app
    from gambar.server.service import JobService

    if args.host not in LOOPBACK and not tokens:
        print(f"warning: serving on {args.host} without a token: anyone who can reach this "
              "machine can use it (pass --token or set GAMBAR_TOKEN)", file=sys.stderr)
    app = create_app(JobService(pipelines, settings))
    print(f"gambar: serving {', '.join(pipelines)} on http://{args.host}:{args.port}/ "
          f"(API docs at /docs; results in {settings.results_dir})", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
