"""Attach trained super-resolution stages to a base model: one model directory, one hash.

    python scripts/build_cascade.py default runs/sr128/model runs/sr256/model --out runs/cascade

The base is any diffusion or grounded model (a name or a directory); each stage a `superres`
model whose input size is the previous output size (64 -> 128 -> 256). Stages the base already
has are replaced. The result is loaded back (every check a user's load makes) before this
prints its hash; ship it with scripts/ship_model.py like any model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gambar.errors import GambarError
from gambar.fsutil import replace_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the base model: a name (default) or a directory")
    parser.add_argument("stages", nargs="+", type=Path, help="superres model directories, "
                        "in the order they run")
    parser.add_argument("--out", type=Path, required=True, help="the directory to write")
    args = parser.parse_args()
    try:
        import gambar
        from gambar.generators.diffusion.cascade import stage_sizes
        from gambar.generators.superres.pipeline import SuperResPipeline
        from gambar.model_dir import resolve_model

        base = gambar.load(args.base)
        if not hasattr(base, "stages"):
            raise GambarError(f"{args.base}: a {base.family} model cannot take cascade stages")
        stages = [SuperResPipeline.load(resolve_model(s)) for s in args.stages]
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
