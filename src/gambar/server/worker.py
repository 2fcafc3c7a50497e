"""What a worker thread does with one job: run the pipeline, resize if asked, encode PNGs.

Only worker threads call this; request handlers only queue jobs and read results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gambar.inputs import decode_input
from gambar.pipeline import Pipeline
from gambar.provenance import png_bytes
from gambar.server.jobs import JobSpec
from gambar.server.sizing import RESIZE_METHOD, resize


class JobCancelled(Exception):
    """Raised inside the pipeline's progress callback to stop a cancelled job between steps."""


def draw_job(pipe: Pipeline, spec: JobSpec, *, progress: Callable[[int, int], None],
             cancelled: Callable[[], bool]) -> list[tuple[bytes, dict[str, Any]]]:
    """Draw a job's images; returns (PNG bytes with provenance, provenance) per image. A clip
    (several frames) is one animated PNG with the same provenance chunks."""

    def on_step(done: int, total: int) -> None:
        progress(done, total)
        if cancelled():
            raise JobCancelled

    if cancelled():
        raise JobCancelled
    # Checked again, not trusted: a job read back from the journal was accepted by an earlier
    # server, whose model may have had other options.
    options = pipe.default_options.with_changes(spec.options, where=spec.model)
    inputs = {name: decode_input(name, value) for name, value in spec.inputs.items()}
    results = pipe.generate([spec.prompt] * len(spec.seeds), seeds=list(spec.seeds),
                            options=options, inputs=inputs or None, progress=on_step)
    out = []
    for gen in results:
        frames, prov = list(gen.frames), dict(gen.provenance)
        if spec.output_size is not None:
            frames = [resize(frame, spec.output_size) for frame in frames]
            # Replay (gambar generate --replay) redraws at "size"; these say how the file's own
            # pixels were made from that.
            prov["resized_to"] = spec.output_size
            prov["resize"] = RESIZE_METHOD
        out.append((png_bytes(frames, prov), prov))
    return out
