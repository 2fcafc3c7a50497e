"""Generation options: one frozen dataclass per family, the only place they are defined,
defaulted and checked.

A family declares its options as fields made with `option()` (default, help text, bounds or
choices). From that one declaration the CLI builds its flags (`cli_flags`), the server its
request schema, `--replay` its validation (`from_provenance`), and a model directory its stored
defaults (`with_changes` on the class defaults). A family with no sampler (a GAN) simply has no
steps/guidance fields, and everything downstream follows.

Torch-free on purpose: the CLI imports every family's options to build its parser.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from gambar.errors import InvalidInputError, shown

T = TypeVar("T", bound="Options")
# The value types an option may have: what a flag, a JSON body and a PNG text chunk all carry.
KINDS: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}


def option(default: Any, *, help: str, low: float | None = None, high: float | None = None,
           choices: tuple[str, ...] | None = None, max_chars: int | None = None,
           flag: str | None = None, provenance: str | None = None,
           needs: str | None = None) -> Any:
    """A field of an Options dataclass. `low`/`high` bound numbers (inclusive), `choices` or
    `max_chars` bound text; `flag` overrides the CLI flag (default --name-with-dashes);
    `provenance` names the dict of the provenance the value is stored in, when not top level
    (diffusion's eta lives in "sampler_options"); `needs` names the input without which the
    option does nothing (img2img's strength needs "init"): set without it, it is refused."""
    meta = {"help": help, "low": low, "high": high, "choices": choices, "max_chars": max_chars,
            "flag": flag, "provenance": provenance, "needs": needs}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionSpec:
    """One option as the CLI, the server schema and the docs see it."""

    name: str
    kind: str  # a key of KINDS
    default: Any
    help: str
    low: float | None
    high: float | None
    choices: tuple[str, ...] | None
    max_chars: int | None
    flag: str
    provenance: str | None
    needs: str | None = None

    def describe_range(self) -> str:
        """'1..1000', 'one of dpmpp, ddim', '' (for help texts and errors)."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.low is not None and self.high is not None:
            return f"{self.low:g}..{self.high:g}"
        return ""


@dataclass(frozen=True)
class Options:
    """Base of every family's options. Subclasses are frozen dataclasses of `option()` fields;
    constructing one checks every value (one-line InvalidInputError naming the option)."""

    family: ClassVar[str] = ""  # the family's name, for messages

    def __post_init__(self) -> None:
        for spec in self.specs():
            value = _checked(spec, getattr(self, spec.name))
            object.__setattr__(self, spec.name, value)  # an int given for a float becomes float

    # ---- the declaration, as data -----------------------------------------------------------
    @classmethod
    def specs(cls) -> tuple[OptionSpec, ...]:
        """Every option of this family, in declaration order."""
        out = []
        for f in dataclasses.fields(cls):
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            if kind not in KINDS:
                raise TypeError(f"{cls.__name__}.{f.name}: options are int, float, str or bool")
            m = f.metadata
            out.append(OptionSpec(
                name=f.name, kind=kind, default=f.default, help=m.get("help", ""),
                low=m.get("low"), high=m.get("high"), choices=m.get("choices"),
                max_chars=m.get("max_chars"),
                flag=m.get("flag") or "--" + f.name.replace("_", "-"),
                provenance=m.get("provenance"), needs=m.get("needs")))
        return tuple(out)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(s.name for s in cls.specs())

    # ---- building and changing ----------------------------------------------------------------
    def with_changes(self: T, changes: Mapping[str, Any], *, where: str = "") -> T:
        """A copy with `changes` applied and checked; an unknown name is a one-line error that
        lists this family's options. None values are "not given" and change nothing."""
        given = {k: v for k, v in changes.items() if v is not None}
        unknown = [k for k in given if k not in self.names()]
        if unknown:
            raise InvalidInputError(unknown_option(unknown[0], type(self), where))
        return dataclasses.replace(self, **given)

    def with_stored(self: T, stored: Any, *, where: str) -> T:
        """A copy with a model's stored defaults (config.json "defaults") applied: like
        `with_changes`, but null is an error there rather than "not given"."""
        if not isinstance(stored, Mapping):
            raise InvalidInputError(f"{where} must be an object of option values")
        nulls = [k for k, v in stored.items() if v is None]
        if nulls:
            raise InvalidInputError(f"{where}: {nulls[0]!r} is null; give a value or remove it")
        return self.with_changes(stored, where=where)

    def to_dict(self) -> dict[str, Any]:
        return {s.name: getattr(self, s.name) for s in self.specs()}

    @classmethod
    def recorded(cls, prov: Mapping[str, Any], *, where: str = "") -> dict[str, Any]:
        """The option values an image's provenance records, by name, as written (not yet
        checked): at its top level, or in the dict an option names (`option(provenance=...)`).
        Such a dict that is not an object, a name in it this family lacks, or a null value is
        a one-line error: replay must not drop what it cannot read."""
        found: dict[str, Any] = {}
        holders = {s.provenance for s in cls.specs() if s.provenance}
        for name in sorted(holders):
            holder = prov.get(name)
            if holder is not None and not isinstance(holder, Mapping):
                raise InvalidInputError(f"{where}: its provenance field {name!r} must be an "
                                        f"object, not {shown(holder)}")
            known = sorted(s.name for s in cls.specs() if s.provenance == name)
            for key in holder or {}:
                if key not in known:
                    raise InvalidInputError(f"{where}: unknown option {shown(key)} in its "
                                            f"provenance's {name!r} (known: {', '.join(known)})")
        for spec in cls.specs():
            holder = (prov.get(spec.provenance) or {}) if spec.provenance else prov
            if spec.name in holder:
                if holder[spec.name] is None:
                    raise InvalidInputError(f"{where}: its provenance field {spec.name!r} is "
                                            "null")
                found[spec.name] = holder[spec.name]
        return found

    @classmethod
    def from_provenance(cls: type[T], prov: Mapping[str, Any], defaults: T | None = None,
                        *, where: str = "") -> T:
        """The options an image's provenance records (`recorded`), checked like any request.
        Options the provenance lacks (written before the option existed) take `defaults`'."""
        base = defaults if defaults is not None else cls()
        found = cls.recorded(prov, where=where)
        try:
            return base.with_changes(found)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: in its provenance, {exc}") from None


def unknown_option(name: str, cls: type[Options], where: str = "") -> str:
    """The message for an option `cls`'s family does not have."""
    names = cls.names()
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    model = f"{where} ({cls.family} model)" if where else f"a {cls.family} model"
    known = ", ".join(names) or "none"
    return f"option {shown(name)} does not apply to {model}; {hint}its options are: {known}"


def _checked(spec: OptionSpec, value: Any) -> Any:
    """`value` as the option's type, within its bounds; else a one-line InvalidInputError."""
    kind = KINDS[spec.kind]
    what = spec.name
    if kind is float and type(value) is int:
        try:
            value = float(value)
        except OverflowError:  # an int past float's range is out of any option's bounds
            raise InvalidInputError(f"{what} must be a number of sensible size, not "
                                    f"{shown(value)}") from None
    if type(value) is not kind:
        wanted = {"int": "a whole number", "float": "a number", "str": "text",
                  "bool": "true or false"}[spec.kind]
        raise InvalidInputError(f"{what} must be {wanted}, not {shown(value)}")
    if kind is float and not math.isfinite(value):
        raise InvalidInputError(f"{what} must be a finite number, not {value}")
    if kind in (int, float):
        low = -math.inf if spec.low is None else spec.low
        high = math.inf if spec.high is None else spec.high
        if not low <= value <= high:
            if spec.low is not None and spec.high is not None:
                bound = f"between {spec.low:g} and {spec.high:g}"
            else:
                bound = f"at least {low:g}" if value < low else f"at most {high:g}"
            raise InvalidInputError(f"{what} must be {bound}, not {shown(value)}")
    if kind is str:
        if spec.choices is not None and value not in spec.choices:
            raise InvalidInputError(
                f"unknown {what} {shown(value)}; choose one of: {', '.join(spec.choices)}")
        if spec.max_chars is not None and len(value) > spec.max_chars:
            raise InvalidInputError(f"{what} is {len(value)} characters; the limit is "
                                    f"{spec.max_chars}")
    return value


def union_specs(classes: Mapping[str, type[Options]]) -> dict[str, tuple[OptionSpec, list[str]]]:
    """Every option name of several families -> (its spec merged over them, the families that
    have it), for the CLI's flags and the server's schema. The merged spec is as wide as the
    widest (lowest low, highest high, longest text, every family's choices), so that it never
    refuses what one family accepts; each family's Options then check their own bounds. Two
    families may share a name only with one kind and one flag."""
    found: dict[str, list[tuple[str, OptionSpec]]] = {}
    for family, cls in classes.items():
        for spec in cls.specs():
            found.setdefault(spec.name, []).append((family, spec))
    out: dict[str, tuple[OptionSpec, list[str]]] = {}
    for name, owned in found.items():
        families, specs = [f for f, _ in owned], [s for _, s in owned]
        for attr in ("kind", "flag"):
            values = {getattr(s, attr) for s in specs}
            if len(values) > 1:
                raise TypeError(f"option {name!r} has {attr}s {sorted(values)} in the families "
                                f"{', '.join(families)}; one name, one {attr}")
        out[name] = (_widest(specs), families)
    return out


def _widest(specs: list[OptionSpec]) -> OptionSpec:
    """One spec that accepts whatever any of `specs` accepts (a bound only where all have one)."""
    first = specs[0]
    if len(specs) == 1:
        return first

    def bound(values: list[Any], pick: Any) -> Any:
        return None if None in values else pick(values)

    helps = list(dict.fromkeys(s.help for s in specs))
    return dataclasses.replace(
        first,
        low=bound([s.low for s in specs], min), high=bound([s.high for s in specs], max),
        max_chars=bound([s.max_chars for s in specs], max),
        choices=(tuple(dict.fromkeys(c for s in specs for c in s.choices or ()))
                 if all(s.choices for s in specs) else None),
        help=helps[0] if len(helps) == 1 else "; ".join(helps),
        needs=first.needs if len({s.needs for s in specs}) == 1 else None)
