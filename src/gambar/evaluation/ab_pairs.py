"""Making A/B pairs: two models draw the same prompts with the same seeds, into an ABStore."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from gambar.evaluation.ab import ABStore
from gambar.pipeline import Pipeline
from gambar.provenance import save_png

IMAGES = "images"  # beside the database: the PNGs the page shows


def model_label(pipe: Pipeline) -> str:
    """How a model is named in the store: its name and hash, so two "default"s stay apart."""
    return f"{pipe.name}@{pipe.sha256[:12]}"


def prepare_pairs(store: ABStore, a: Pipeline, b: Pipeline, prompts: Sequence[str],
                  seeds: Sequence[int], *, batch_size: int = 8,
                  progress: Callable[[int, int], None] | None = None) -> list[int]:
    """Draw every (prompt, seed) with both models, save the PNGs (with provenance) beside the
    database, and store one pair each. Returns the new pair ids."""
    folder = store.path.parent / IMAGES
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(p, s) for p in prompts for s in seeds]
    drawn = [pipe.generate([p for p, _ in jobs], seeds=[s for _, s in jobs],
                           batch_size=batch_size, progress=progress is None)
             for pipe in (a, b)]
    label_a, label_b = model_label(a), model_label(b)
    ids = []
    first = _next_free(folder)
    for k, ((prompt, seed), img_a, img_b) in enumerate(zip(jobs, *drawn, strict=True)):
        names = []
        for side, gen in (("a", img_a), ("b", img_b)):
            name = f"{first + k:06d}-{side}.png"
            save_png(folder / name, gen.image, gen.provenance)
            names.append(name)
        ids.append(store.add_pair(prompt, seed, label_a, label_b, *names))
        if progress is not None:
            progress(k + 1, len(jobs))
    return ids


def _next_free(folder: Path) -> int:
    """The first image number not used yet: preparing twice adds pairs, never overwrites."""
    numbers = [int(p.name.split("-")[0]) for p in folder.glob("*-a.png")
               if p.name.split("-")[0].isdigit()]
    return max(numbers, default=-1) + 1
