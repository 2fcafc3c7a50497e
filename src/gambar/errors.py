"""User-facing errors: the CLI prints these as one line (no traceback) and exits with code 2."""

import reprlib
from typing import Any

# How messages quote a value the user gave: short, and shallow (a config value or a request
# body may be a megabyte long or nest 900 deep; the error must stay one readable line).
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlong = 2, 60, 60, 40
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = 4


def shown(value: Any) -> str:
    """`value`'s repr cut short, for a one-line error message."""
    return _SHOWN.repr(value)


class GambarError(Exception):
    """A mistake the user can fix (bad prompt, path, size, corrupt file). Never a bug."""


class InvalidInputError(GambarError):
    """An argument is out of range or malformed."""


class ModelNotFoundError(GambarError):
    """A model name or path does not resolve to a saved model."""


class CorruptFileError(GambarError):
    """A checkpoint, weight file or config is unreadable or fails its integrity check."""
