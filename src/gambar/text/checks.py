"""What text the encoders accept: real Unicode (no lone surrogates), and a prompt that shows
something (not only spaces, zero-width or control characters)."""

from __future__ import annotations

import unicodedata
from typing import Any

from gambar.errors import InvalidInputError

# Unicode categories that draw nothing: controls, format characters (zero-width space and
# joiners, BOM, bidi marks), surrogates and every kind of space. Not "Cn" (unassigned): emoji
# newer than Python's Unicode tables are unassigned to it and must still count as a prompt.
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})


def check_encodable(text: Any, what: str = "the prompt") -> str:
    """`text` if it is a str of real characters; else a one-line InvalidInputError.

    Python turns bytes that are not UTF-8 in argv into lone surrogates (U+DC80-U+DCFF), and JSON
    can spell them ("\\udcff"); tokenizers reject them with a TypeError, so they stop here."""
    if not isinstance(text, str):
        raise InvalidInputError(f"{what} must be text, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise InvalidInputError(
            f"{what} holds an invalid character U+{ord(bad):04X} at position {exc.start} "
            "(bytes that are not UTF-8?); retype it, or set the terminal to UTF-8") from None
    return text


def check_prompt(text: Any, what: str = "the prompt") -> str:
    """`text` if it is encodable and shows at least one visible character."""
    check_encodable(text, what)
    if all(unicodedata.category(c) in INVISIBLE_CATEGORIES for c in text):
        detail = " (it holds only spaces or invisible characters)" if text else ""
        raise InvalidInputError(
            f'{what} is empty{detail}; give a description, e.g. "a red circle"')
    return text
