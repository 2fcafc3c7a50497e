"""A real gambar server on 127.0.0.1 for tests: uvicorn in a thread on a free port."""

from __future__ import annotations

import importlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from PIL import Image


def need(module: str) -> ModuleType:
    """Import an optional test dependency: skip without it locally, fail without it in CI."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is not installed")


@dataclass
class Server:
    url: str
    service: Any  # gambar.server.service.JobService
    app: Any


@contextmanager
def live_server(pipelines: dict, results: Path, **settings: Any) -> Iterator[Server]:
    """Start the app (and its worker threads) on a free 127.0.0.1 port; stop it afterwards."""
    import uvicorn

    from gambar.server.app import create_app
    from gambar.server.service import JobService
    from gambar.server.settings import ServerSettings

    service = JobService(pipelines, ServerSettings(results_dir=results, **settings))
    app = create_app(service)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield Server(f"http://127.0.0.1:{port}", service, app)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def client_from(url: str, address: str, **kwargs: Any) -> Any:
    """An httpx.Client whose connections come from `address` (any 127.x.y.z on Linux), so a
    test can be several machines at once (the fair queue shares turns per address)."""
    import httpx

    return httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address=address),
                        **kwargs)


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(args: list[str], env: dict[str, str] | None = None,
                timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """`gambar serve ARGS` as a real process on a free port; it and its URL once /api/health
    answers. Stop it with proc.send_signal(...) or proc.kill(), then proc.communicate()."""
    import httpx

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gambar.cli", "serve", "--port", str(port),
         "--log-level", "warning", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/api/health").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            raise RuntimeError(f"gambar serve did not start (exit {proc.returncode}): "
                               f"{err.decode()[-2000:]}")
        time.sleep(0.1)


def wait_done(client: Any, job_id: str, timeout: float = 30.0) -> dict:
    """Poll GET /api/jobs/{id} until the job has finished; its final status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/api/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.02)
    raise TimeoutError(f"job {job_id} did not finish in {timeout} s")


def png_provenance(data: bytes) -> tuple[Image.Image, dict]:
    """Decode PNG bytes; the image and the gambar provenance in its text chunks."""
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image, json.loads(image.text["gambar"])


@pytest.fixture(scope="session")
def served_models(tiny_model_dir):
    """The tiny test model, loaded once and shared by every test server (sampling is stateless)."""
    import gambar

    pipe = gambar.load(tiny_model_dir)
    return {pipe.name: pipe}
