"""A model's text encoder as saved with it: frozen pretrained (outside the weights) or trainable
(its weights inside the model's, its tokenizer in tokenizer.json beside them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from gambar.errors import CorruptFileError, InvalidInputError
from gambar.fsutil import atomic_write_text
from gambar.model_dir import CONFIG
from gambar.text.base import Encoded, TextEncoder

TOKENIZER_FILE = "tokenizer.json"
MAX_TOKENIZER_BYTES = 64 << 20  # a caption BPE is kilobytes; even MAX_VOCAB_SIZE tokens fit
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
    def from_dict(cls, d: Mapping[str, Any], path: Path) -> TextSetup:
        """The encoder a model's config.json `text_encoder` entry describes, a small one with
        tokenizer.json from `path`. Damage is a one-line CorruptFileError naming the file."""
        config = path / CONFIG
        if not isinstance(d, Mapping):
            raise CorruptFileError(f"{config}: 'text_encoder' must be a table with a 'kind', "
                                   f"not {d!r}; re-save or re-download the model")
        if d.get("kind") not in KINDS:
            raise CorruptFileError(f"{config} names an unknown text encoder {d.get('kind')!r} "
                                   f"(known: {', '.join(KINDS)}); re-save or re-download the model")
        if d["kind"] == "minilm":
            return cls.build("minilm")
        from gambar.text.small import SmallTextEncoder

        tokenizer = _read_tokenizer(path / TOKENIZER_FILE)
        try:
            encoder = SmallTextEncoder.from_dict(d.get("config"), tokenizer)
        except InvalidInputError as exc:  # a wrong key, type or size in config.json
            raise CorruptFileError(f"{config} is not a valid model config: {exc}; "
                                   "re-save or re-download the model") from None
        except CorruptFileError as exc:  # the tokenizer's own words, without the file
            raise CorruptFileError(f"{path / TOKENIZER_FILE} is damaged ({exc}); "
                                   "re-save or re-download the model") from None
        return cls("small", trainable=encoder)


def _read_tokenizer(file: Path) -> str:
    """tokenizer.json's text: unreadable, oversized or non-UTF-8 is a CorruptFileError."""
    try:
        with file.open("rb") as fh:
            data = fh.read(MAX_TOKENIZER_BYTES + 1)
    except OSError as exc:
        raise CorruptFileError(f"{file} is unreadable ({exc.strerror or exc}); "
                               "re-save or re-download the model") from None
    if len(data) > MAX_TOKENIZER_BYTES:
        raise CorruptFileError(f"{file} is over {MAX_TOKENIZER_BYTES >> 20} MB, more than any "
                               "caption tokenizer; re-save or re-download the model")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptFileError(f"{file} is not UTF-8 text; re-save or re-download the "
                               "model") from None
