"""`gambar train recipe.toml`: read the recipe, apply --set overrides, run the shared loop."""

from __future__ import annotations

import argparse
from pathlib import Path

from gambar.config import apply_overrides, load_recipe
from gambar.errors import InvalidInputError
from gambar.registry import task_factory
from gambar.train.recipe import OverrideSchema


def run_train(args: argparse.Namespace) -> Path:
    """Train from the recipe named on the command line; returns the exported model directory."""
    recipe = load_recipe(args.recipe)
    family = recipe.get("family")
    if not isinstance(family, str):
        raise InvalidInputError(f"{args.recipe} names no family (e.g. family = \"diffusion\")")
    factory = task_factory(family)
    # [train], every [train.optimizers.<group>] and the family's own sections
    schema = OverrideSchema(getattr(factory, "SCHEMA", {}))
    recipe = apply_overrides(recipe, args.set, schema)

    from gambar.train.loop import train  # imports accelerate: only when training

    model_dir = train(factory, recipe, resume=args.resume, progress=not args.quiet)
    print(f"model saved to {model_dir}")
    return model_dir
