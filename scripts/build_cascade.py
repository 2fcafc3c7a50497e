"""Attach trained super-resolution stages to a base model: one model directory, one hash.

    python scripts/build_cascade.py default runs/sr128/model runs/sr256/model --out runs/cascade \
        --aug-level 128=0.1 --aug-level 256=0.2 --stage-default steps=8 --stage-default guidance=1

The base is any diffusion or grounded model (a name or a directory); each stage a `superres`
model whose input size is the previous output size (64 -> 128 -> 256). Stages the base already
has are replaced. `--aug-level SIZE=LEVEL` stores the noise-augmentation level a stage samples
with (chosen by benchmarks/cascade.py --levels); `--stage-default KEY=VALUE` a generation default
of every stage (steps, guidance, sampler). The result is loaded back (every check a user's load
makes) before this prints its hash; ship it with scripts/ship_model.py like any model.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from gambar.errors import GambarError
from gambar.fsutil import replace_dir


def _pair(text: str, value: Any) -> tuple[Any, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise GambarError(f"expected KEY=VALUE, got {text!r}")
    try:
        return (int(key) if key.isdigit() else key), value(raw)
    except ValueError:
        if value is json.loads:
            return key, raw  # a bare word such as ddim
        raise GambarError(f"{text!r}: {raw!r} is not a number") from None


def _with(stage: Any, level: float | None, defaults: dict[str, Any]) -> Any:
    """The stage with its augmentation level and generation defaults replaced (checked)."""
    from gambar.generators.superres.pipeline import SuperResPipeline

    superres = stage.superres if level is None else replace(stage.superres, aug_level=level)
    stored = {k: v for k, v in stage.extra.get("defaults", {}).items()
              if not (k == "aug_level" and level is not None)}
    extra = {**stage.extra, "defaults": {**stored, **defaults}}
    return SuperResPipeline(stage.model, stage.text, stage.cfg, superres, name=stage.name,
                            extra=extra)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the base model: a name (default) or a directory")
    parser.add_argument("stages", nargs="+", type=Path, help="superres model directories, "
                        "in the order they run")
    parser.add_argument("--out", type=Path, required=True, help="the directory to write")
    parser.add_argument("--aug-level", action="append", default=[], metavar="SIZE=LEVEL",
                        help="the augmentation level of the stage that draws SIZE")
    parser.add_argument("--stage-default", action="append", default=[], metavar="KEY=VALUE",
                        help="a generation default of every stage (steps=8, guidance=1 ...)")
    args = parser.parse_args()
    try:
        import gambar
        from gambar.generators.diffusion.cascade import stage_sizes
        from gambar.generators.superres.pipeline import SuperResPipeline
        from gambar.model_dir import resolve_model

        base = gambar.load(args.base)
        if not hasattr(base, "stages"):
            raise GambarError(f"{args.base}: a {base.family} model cannot take cascade stages")
        levels = dict(_pair(text, float) for text in args.aug_level)
        defaults = dict(_pair(text, json.loads) for text in args.stage_default)
        stages = [SuperResPipeline.load(resolve_model(s)) for s in args.stages]
        stages = [_with(s, levels.pop(s.cfg.image_size, None), defaults) for s in stages]
        if levels:
            raise GambarError(f"no stage draws {', '.join(map(str, levels))} px (--aug-level)")
        size = base.cfg.image_size  # type: ignore[attr-defined]
        for path, stage in zip(args.stages, stages, strict=True):
            if stage.cfg.image_size != size * stage.superres.factor:
                raise GambarError(
                    f"{path} raises {stage.cfg.image_size // stage.superres.factor} px images, "
                    f"but the cascade is at {size} px here")
            size = stage.cfg.image_size
        base.stages = stages  # type: ignore[attr-defined]
        staging = args.out.with_name(args.out.name + ".building")
        base.save(staging)
        loaded = gambar.load(staging)
        replace_dir(staging, args.out)
    except GambarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sizes = stage_sizes(base.cfg.image_size, stages)  # type: ignore[attr-defined]
    print(f"{args.out}: {base.family} base at {base.cfg.image_size} px, stages to "  # type: ignore[attr-defined]
          f"{', '.join(map(str, sizes))} px; hash {loaded.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
