"""What the drawing commands (generate, sheet, evaluate) share: the generation options a user
gave on the command line, checked against the model's family before the model is loaded."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gambar.errors import GambarError
from gambar.inputs import check_names
from gambar.model_dir import read_config
from gambar.options import union_specs
from gambar.pipeline import resolve_model
from gambar.registry import all_options, is_generator, options_class, pipeline_class


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The option flags set on the command line (cli._option_flags), by option name."""
    names = union_specs(all_options())
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def flag_of(name: str) -> str:
    """The command-line flag of option `name` (--negative for negative_prompt)."""
    return union_specs(all_options())[name][0].flag


def check_early(model: str | Path, given: dict[str, Any], inputs: Iterable[str] = ()) -> None:
    """Refuse options the model's family lacks or bounds it breaks, and inputs it does not
    take, from its config.json alone, so that a mistake costs no weight loading. The model's
    load() and generate() check everything again."""
    config = read_config(resolve_model(model))
    family = config["family"]
    if not is_generator(family):
        return  # an evaluator or an unknown family: load() says which, in one line
    pipeline = pipeline_class(family)
    check_names(dict.fromkeys(inputs), pipeline.inputs, family)
    defaults = options_class(family)()
    try:
        defaults = defaults.with_changes(config.get("defaults", {}))
    except (GambarError, TypeError, AttributeError):
        pass  # a damaged "defaults": the model's load() says so in its own words
    defaults.with_changes(given, where=str(model))
