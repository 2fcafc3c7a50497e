"""A real gambar server on 127.0.0.1 for tests (uvicorn in a thread on a free port), and fake
pipelines: one of a family with no sampler options that takes a layout, one that draws a
diffusion model's options at once, and a wrapper for pipelines that misbehave on cue."""

from __future__ import annotations

import hashlib
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
from typing import Any, ClassVar

import pytest
from PIL import Image, ImageDraw

from gambar.errors import InvalidInputError
from gambar.generators.diffusion.options import DiffusionOptions
from gambar.options import Options, option
from gambar.pipeline import Generated, check_request, common_provenance, input_provenance


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


class Proxy:
    """A pipeline wrapping another: everything but what a subclass overrides is the wrapped
    one's (family, name, Options, inputs, default_options ...)."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)


@dataclass(frozen=True)
class BoxesOptions(Options):
    """A family with no sampler: no steps, guidance, sampler or negative prompt."""

    family: ClassVar[str] = "boxes"

    size: int = option(16, low=8, high=64, help="image side in pixels")


class BoxesPipeline:
    """A one-step family that takes a layout: each box is filled with a colour from the seed,
    on white (all white without a layout). `frames` > 1 makes clips whose frames darken."""

    family = "boxes"
    Options = BoxesOptions
    inputs = frozenset({"layout"})

    def __init__(self, name: str = "boxes", frames: int = 1) -> None:
        self.name, self.frames = name, frames
        self.sha256 = hashlib.sha256(name.encode()).hexdigest()
        self.default_options = BoxesOptions()

    def check(self, options, inputs):
        pass  # no rule beyond its Options

    def generate(self, prompts, *, seeds, options=None, inputs=None, batch_size=8,
                 progress=True, **changes):
        opts, inputs = check_request(self, prompts, seeds, options, changes, inputs, batch_size)
        layout = (inputs or {}).get("layout")
        out = []
        for k, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
            frames = [self.draw(opts.size, seed, layout, f) for f in range(self.frames)]
            prov = {**common_provenance(self, prompt, seed, k, len(prompts)),
                    **opts.to_dict(), **input_provenance(inputs)}
            out.append(Generated(frames, prov))
            if callable(progress):
                progress(k + 1, len(prompts))
        return out

    @staticmethod
    def colour(seed: int, frame: int = 0) -> tuple[int, int, int]:
        return (seed * 37 % 200, seed * 91 % 200, 200 - 40 * frame)

    @classmethod
    def draw(cls, size: int, seed: int, layout: Any, frame: int = 0) -> Image.Image:
        image = Image.new("RGB", (size, size), "white")
        for box in layout.objects if layout else ():
            ImageDraw.Draw(image).rectangle(
                (box.x0 * size, box.y0 * size, box.x1 * size - 1, box.y1 * size - 1),
                fill=cls.colour(seed, frame))
        return image


class Instant:
    """A diffusion-family pipeline that draws a grey square at once (tests of parsing and the
    job flow, not of sampling); its defaults are those of the tiny test model."""

    family, name, sha256 = "diffusion", "tiny", "0" * 64
    Options = DiffusionOptions
    inputs = frozenset({"init", "mask"})
    default_options = DiffusionOptions(steps=2, guidance=3.0, sampler="ddim", size=32)

    def check(self, options, inputs):
        if "mask" in inputs and "init" not in inputs:  # as the real diffusion pipeline
            raise InvalidInputError("a mask needs an init image (the pixels it keeps)")

    def generate(self, prompts, *, seeds, options=None, inputs=None, batch_size=8,
                 progress=True, **changes):
        opts, inputs = check_request(self, prompts, seeds, options, changes, inputs, batch_size)
        if callable(progress):
            progress(1, 1)
        return [Generated([Image.new("RGB", (opts.size, opts.size), "grey")],
                          {"seed": s, **opts.to_dict(), **input_provenance(inputs)})
                for s in seeds]
