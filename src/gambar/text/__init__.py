"""Text encoders: prompt -> token states, mask and pooled vector (one interface for all).

The names below are imported on first use (PEP 562), not with the package: `gambar.text.checks`
(what counts as a prompt) is on the command line's path, which must not pay for torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from gambar.errors import InvalidInputError

if TYPE_CHECKING:
    from gambar.text.base import Encoded, TextEncoder, masked_mean
    from gambar.text.frozen import FrozenMiniLM, load_frozen_minilm
    from gambar.text.small import SmallTextConfig, SmallTextEncoder
    from gambar.text.tokenizer import CaptionTokenizer, train_tokenizer

# public name -> the module that defines it
_LAZY = {
    "Encoded": "base", "TextEncoder": "base", "masked_mean": "base",
    "FrozenMiniLM": "frozen", "load_frozen_minilm": "frozen",
    "SmallTextConfig": "small", "SmallTextEncoder": "small",
    "CaptionTokenizer": "tokenizer", "train_tokenizer": "tokenizer",
}
TEXT_ENCODERS = ("minilm", "small")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"gambar.text.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'gambar.text' has no attribute {name!r}")


def build_text_encoder(kind: str, **kwargs: Any) -> TextEncoder:
    """Text encoder by kind: "minilm" (max_length=) or "small" (config=, tokenizer=)."""
    if kind == "minilm":  # shared singleton: loading once serves every caller
        from gambar.text.frozen import load_frozen_minilm

        return load_frozen_minilm(**kwargs)
    if kind == "small":
        from gambar.text.small import SmallTextEncoder

        return SmallTextEncoder.from_dict(**kwargs)
    raise InvalidInputError(
        f"unknown text encoder {kind!r}; choose one of: {', '.join(TEXT_ENCODERS)}")


__all__ = [
    "TEXT_ENCODERS",
    "CaptionTokenizer",
    "Encoded",
    "FrozenMiniLM",
    "SmallTextConfig",
    "SmallTextEncoder",
    "TextEncoder",
    "build_text_encoder",
    "load_frozen_minilm",
    "masked_mean",
    "train_tokenizer",
]
