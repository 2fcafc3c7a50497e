"""A model's text encoder as saved with it: frozen pretrained (outside the weights) or trainable
(its weights inside the model's, its tokenizer in tokenizer.json beside them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from gambar.errors import CorruptFileError, InvalidInputError
from gambar.fsutil import atomic_write_text
from gambar.text.base import Encoded, TextEncoder

TOKENIZER_FILE = "tokenizer.json"
KINDS = ("minilm", "small")


@dataclass
class TextSetup:
    """kind "minilm": `frozen` is the shared pretrained encoder; kind "small": `trainable` is a
    SmallTextEncoder that lives inside the model (module name `text`)."""

    kind: str
    frozen: TextEncoder | None = None
    trainable: nn.Module | None = None

    @classmethod
    def build(cls, kind: str, captions: Sequence[str] = (), **small_kwargs: Any) -> TextSetup:
        """A fresh encoder for training; a small one learns its tokenizer from `captions`."""
        if kind == "minilm":
            from gambar.text.frozen import load_frozen_minilm

            return cls(kind, frozen=load_frozen_minilm())
        if kind == "small":
            from gambar.text.small import SmallTextEncoder

            return cls(kind, trainable=SmallTextEncoder.from_captions(captions, **small_kwargs))
        raise InvalidInputError(f"unknown text encoder {kind!r}; choose one of {', '.join(KINDS)}")

    @property
    def dim(self) -> int:
        encoder = self.frozen if self.frozen is not None else self.trainable
        return int(encoder.dim)  # type: ignore[union-attr]

    def encode(self, texts: Sequence[str], model: nn.Module | None = None) -> Encoded:
        """Encode with the frozen encoder, or with `model.text` (the trained copy: EMA or not)."""
        if self.frozen is not None:
            return self.frozen(list(texts))
        encoder = getattr(model, "text", None) or self.trainable
        return encoder(list(texts))  # type: ignore[misc]

    def describe(self) -> dict[str, Any]:
        """Name and version, for provenance."""
        if self.frozen is not None:
            return {"name": self.frozen.name, "version": getattr(self.frozen, "version", "")}
        return {"name": "small-transformer", "version": "trained with the model"}

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, **self.describe()}
        if self.trainable is not None:
            d["config"] = asdict(self.trainable.cfg)  # type: ignore[arg-type]
        return d

    def save_files(self, path: Path) -> None:
        if self.trainable is not None:
            atomic_write_text(path / TOKENIZER_FILE, self.trainable.tokenizer.to_json(),
                              overwrite=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: Path) -> TextSetup:
        kind = d["kind"]
        if kind == "minilm":
            return cls.build("minilm")
        if kind == "small":
            from gambar.text.small import SmallTextEncoder

            try:
                tokenizer = (path / TOKENIZER_FILE).read_text()
            except OSError as exc:
                raise CorruptFileError(f"{path / TOKENIZER_FILE} is unreadable ({exc})") from None
            return cls(kind, trainable=SmallTextEncoder.from_dict(d["config"], tokenizer))
        raise CorruptFileError(f"unknown text encoder kind {kind!r} in {path / 'config.json'}")
