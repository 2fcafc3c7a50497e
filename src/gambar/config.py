"""Recipes: TOML files read into nested dicts, `--set a.b=v` overrides, and checked dataclasses."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from gambar.errors import CorruptFileError, InvalidInputError, shown
from gambar.fsutil import is_file

T = TypeVar("T")


MAX_RECIPE_BYTES = 1 << 20  # a recipe is a few hundred bytes; more is a wrong file


def check_range(name: str, value: float, low: float, high: float, *,
                low_open: bool = False, high_open: bool = False) -> None:
    """A one-line InvalidInputError naming `name` unless low <= value <= high (< where a bound is
    open) and finite: TOML and JSON read `nan` and `inf`, and inf would pass an open-ended range.
    The one range check every config's __post_init__ uses."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number, got {value}")
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if above and below:
        return
    if not (low_open or high_open or math.isinf(high)):
        raise InvalidInputError(
            f"{name} must be between {_number(low)} and {_number(high)}, not {value}")
    if math.isinf(high):
        bound = f"{'>' if low_open else '>='} {_number(low)}"
    else:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        bound = f"in {left}{_number(low)}, {_number(high)}{right}"
    raise InvalidInputError(f"{name} must be {bound}, got {value}")


def nesting_depth(value: Any, limit: int) -> int:
    """How deep dicts and lists nest in `value` (a scalar 0, a flat table 1), counted without
    recursion and only until it passes `limit`: loaded JSON or TOML that nests absurdly deep
    (100,000 levels) would otherwise exhaust the recursion of any code that walks it."""
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= limit:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1)
                         for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe TOML file into a nested dict."""
    path = Path(path)
    if not is_file(path):
        if path.exists() if len(os.fsencode(path.name)) <= 255 else False:
            raise InvalidInputError(f"recipe {path} is not a file; name a .toml recipe")
        raise InvalidInputError(f"recipe file {path} does not exist")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_RECIPE_BYTES + 1)
    except OSError as e:
        raise InvalidInputError(f"recipe file {path} cannot be read: {e.strerror}") from None
    if len(data) > MAX_RECIPE_BYTES:
        raise InvalidInputError(f"recipe file {path} is over {MAX_RECIPE_BYTES >> 20} MB; "
                                "is it a recipe?")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"recipe file {path} is not valid TOML: {e}") from None
    except RecursionError:
        raise CorruptFileError(f"recipe file {path} is not valid TOML: nested too deep") from None


def parse_value(raw: str) -> Any:
    """Read an override value as a TOML literal (3e-4, 96, true, [1, 2], "x"); else a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(
    recipe: Mapping[str, Any],
    overrides: Iterable[str],
    schema: Mapping[str, type] | None = None,
) -> dict[str, Any]:
    """Return a copy of `recipe` with each "section.key=value" applied.

    A key must already be in the recipe, or be a field of the dataclass `schema` gives for its
    section (e.g. {"train": TrainConfig}), so that a typo is an error rather than a silent no-op.
    """
    out = copy.deepcopy(dict(recipe))
    for item in overrides:
        dotted, sep, raw = item.partition("=")
        dotted = dotted.strip()
        if not sep or not dotted or any(not p for p in dotted.split(".")):
            raise InvalidInputError(f"override {item!r} must look like section.key=value")
        _set_key(out, dotted.split("."), raw.strip(), schema or {})
    return out


def _set_key(recipe: dict[str, Any], path: list[str], raw: str, schema: Mapping[str, type]) -> None:
    node = recipe
    for depth, part in enumerate(path[:-1]):
        section = ".".join(path[: depth + 1])
        if part not in node and section in schema:
            node[part] = {}  # a section left to its dataclass defaults
        if not isinstance(node.get(part), dict):
            raise _unknown(".".join(path), node, schema.get(".".join(path[:depth])))
        node = node[part]
    key, section = path[-1], ".".join(path[:-1])
    parsed = parse_value(raw)
    where = ".".join(path)
    if key in node:
        node[key] = _coerce_like(node[key], parsed, raw, where)
    elif (cls := schema.get(section)) is not None and key in _field_names(cls):
        node[key] = _coerce(typing.get_type_hints(cls)[key], _as_str(parsed, raw, cls, key), where)
    else:
        raise _unknown(where, node, schema.get(section))


def _as_str(parsed: Any, raw: str, cls: type, key: str) -> Any:
    """A str field takes the override text as typed (run_dir=123 means "123")."""
    return raw if typing.get_type_hints(cls)[key] is str and not isinstance(parsed, str) else parsed


def _unknown(where: str, node: Mapping[str, Any], cls: type | None) -> InvalidInputError:
    valid = sorted(set(node) | (set(_field_names(cls)) if cls else set()))
    if not valid:  # a table of tables ([train.optimizers]): its keys are names, not settings
        return InvalidInputError(f"'{where}' must be a table of settings, e.g. {where}.lr=1e-4")
    return InvalidInputError(f"unknown key '{where}'; valid keys there: {', '.join(valid)}")


def _coerce_like(old: Any, new: Any, raw: str, where: str) -> Any:
    """Give an overridden value the type of the value it replaces."""
    if isinstance(old, dict):
        raise InvalidInputError(f"'{where}' is a section; set one of its keys, e.g. {where}.x=1")
    if isinstance(old, str):
        return new if isinstance(new, str) else raw
    if isinstance(old, bool):
        return _coerce(bool, new, where)
    if isinstance(old, int | float):
        return _coerce(type(old), new, where)
    if isinstance(old, list):
        return _coerce(list, new, where)
    return new


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def dataclass_from_dict(cls: type[T], d: Mapping[str, Any], *, section: str = "") -> T:
    """Build the frozen dataclass `cls` from one recipe section, checking keys and types."""
    if not isinstance(d, Mapping):
        raise InvalidInputError(f"[{section or cls.__name__}] must be a table, got {shown(d)}")
    names = _field_names(cls)
    unknown = [k for k in d if k not in names]
    prefix = f"{section}." if section else ""
    if unknown:
        raise InvalidInputError(
            f"unknown key '{prefix}{unknown[0]}' for {cls.__name__}; valid keys: {', '.join(names)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(hints[k], v, f"{prefix}{k}") for k, v in d.items()}
    return cls(**kwargs)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _mismatch(hint: Any, value: Any, where: str) -> InvalidInputError:
    return InvalidInputError(f"'{where}' expects {_type_name(hint)}, got {shown(value)}")


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Check `value` against a type hint; lists become tuples and ints floats where asked."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin is Literal:
        if value not in args:
            choices = " | ".join(repr(a) for a in args)
            raise InvalidInputError(f"'{where}' must be one of {choices}, got {shown(value)}")
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(hint, args, value, where)
    if origin is tuple:
        return _coerce_tuple(hint, args, value, where)
    if origin is list or hint is list:
        if not isinstance(value, list | tuple):
            raise _mismatch(hint, value, where)
        item = args[0] if args else Any
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise _mismatch(hint, value, where)
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return dataclass_from_dict(hint, value, section=where)
    return _coerce_scalar(hint, value, where)


def _coerce_scalar(hint: Any, value: Any, where: str) -> Any:
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # TOML ints have no size limit; no setting is that large
                raise InvalidInputError(f"'{where}' is far too large: {shown(value)}") from None
        raise _mismatch(hint, value, where)
    if hint is int or hint is bool or hint is str:
        # bool is an int subclass in Python; `steps = true` is still a mistake.
        if type(value) is not hint:
            raise _mismatch(hint, value, where)
        return value
    if isinstance(hint, type) and not isinstance(value, hint):
        raise _mismatch(hint, value, where)
    return value


def _coerce_union(hint: Any, args: tuple[Any, ...], value: Any, where: str) -> Any:
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(arg, value, where)
        except InvalidInputError:
            continue
    raise _mismatch(hint, value, where)


def _coerce_tuple(hint: Any, args: tuple[Any, ...], value: Any, where: str) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        raise _mismatch(hint, value, where)
    if len(args) == 2 and args[1] is Ellipsis:
        items = [args[0]] * len(value)
    elif args:
        if len(args) != len(value):
            raise InvalidInputError(
                f"'{where}' expects {len(args)} items, got {shown(list(value))}")
        items = list(args)
    else:
        items = [Any] * len(value)
    return tuple(
        _coerce(h, v, f"{where}[{i}]") for i, (h, v) in enumerate(zip(items, value, strict=True))
    )
