"""Text encoders: prompt -> token states, mask and pooled vector (one interface for all)."""

from __future__ import annotations

from typing import Any

from gambar.errors import InvalidInputError
from gambar.text.base import Encoded, TextEncoder, masked_mean
from gambar.text.frozen import FrozenMiniLM, load_frozen_minilm
from gambar.text.small import SmallTextConfig, SmallTextEncoder
from gambar.text.tokenizer import CaptionTokenizer, train_tokenizer

# kind -> builder; every encoder's to_dict() names its kind, so build_text_encoder(**d) rebuilds it
_BUILDERS: dict[str, Any] = {
    "minilm": load_frozen_minilm,  # shared singleton: loading once serves every caller
    "small": SmallTextEncoder.from_dict,
}
TEXT_ENCODERS = tuple(_BUILDERS)


def build_text_encoder(kind: str, **kwargs: Any) -> TextEncoder:
    """Text encoder by kind: "minilm" (max_length=) or "small" (config=, tokenizer=)."""
    builder = _BUILDERS.get(kind)
    if builder is None:
        raise InvalidInputError(
            f"unknown text encoder {kind!r}; choose one of: {', '.join(TEXT_ENCODERS)}"
        )
    return builder(**kwargs)


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
