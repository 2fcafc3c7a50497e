"""A small BPE tokenizer learned from the training captions, in whatever language they are in.

A trainable text encoder needs no pretrained vocabulary: byte-pair encoding (Sennrich et al. 2016)
learned on the captions gives every frequent word (English "circle", Indonesian "lingkaran") its own
token and splits rare words into pieces instead of mapping them to [UNK]. The tokenizer serialises
to the `tokenizers` JSON format, which is stored beside the model weights (never pickled).
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Sequence

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from gambar.errors import CorruptFileError, InvalidInputError
from gambar.text.checks import check_encodable

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)  # trainer assigns ids in this order: [PAD] = 0 ... [EOS] = 3
# Seeded so that letters and digits absent from the captions still tokenise (a user may type a
# word the data never had); NFKC + lowercase run first, so upper case is covered too.
INITIAL_ALPHABET = tuple(string.ascii_lowercase + string.digits + string.punctuation)
MIN_LENGTH = 2  # room for [BOS] and [EOS]


def _empty_tokenizer() -> Tokenizer:
    """An untrained BPE pipeline: NFKC + lowercase, split on spaces/punctuation/digits."""
    # Plain BPE, without WordPiece's "##" prefix: the trainer creates prefixed tokens in hash-map
    # order, which makes the learned vocabulary vary between runs (huggingface/tokenizers#1794).
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    # NFKC folds compatibility forms (full-width letters, ligatures) so they match the ASCII ones.
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Whitespace(),  # \w+ | [^\w\s]+ ; \w is Unicode-aware
            # one token per digit, so "12" and "21" share pieces and counts generalise
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    return tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1000) -> CaptionTokenizer:
    """Learn a BPE vocabulary (at most vocab_size entries) from captions; same texts, same vocab."""
    if vocab_size < len(SPECIAL_TOKENS) + len(INITIAL_ALPHABET):
        raise InvalidInputError(
            f"vocab_size={vocab_size} is too small; it needs at least "
            f"{len(SPECIAL_TOKENS) + len(INITIAL_ALPHABET)} for special tokens and the alphabet"
        )
    tokenizer = _empty_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=list(INITIAL_ALPHABET),
        show_progress=False,
    )
    tokenizer.train_from_iterator((str(t) for t in texts), trainer=trainer)
    return CaptionTokenizer(tokenizer)


class CaptionTokenizer:
    """Captions -> ids with [BOS] ... [EOS] framing and right padding with [PAD] = 0."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        ids = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
        if ids != list(range(len(SPECIAL_TOKENS))):
            raise CorruptFileError(
                f"tokenizer must have special tokens {SPECIAL_TOKENS} at ids 0-3, found ids {ids}"
            )
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = ids

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (an embedding table needs this many rows)."""
        return self._tokenizer.get_vocab_size()

    def tokenize(self, text: str) -> list[str]:
        """The token strings of one caption, without [BOS]/[EOS] (for inspection and tests)."""
        return self._tokenizer.encode(text, add_special_tokens=False).tokens

    def encode(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> ids (B, L) long and mask (B, L) bool; L = longest in batch <= max_length."""
        if isinstance(texts, str):
            raise TypeError("pass a sequence of captions, not a single string")
        if max_length < MIN_LENGTH:
            raise InvalidInputError(f"max_length must be at least {MIN_LENGTH}, got {max_length}")
        for text in texts:
            check_encodable(text, "the text to encode")
        # Framing and truncation are done here rather than by the Rust tokenizer's stateful
        # settings, so one instance is safe to share between threads (nothing is mutated).
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        rows = [[self.bos_id, *e.ids[: max_length - 2], self.eos_id] for e in encodings]
        length = max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        # The mask is built from lengths, not from ids != pad_id, so it stays right even if a
        # caller ever pads with another id.
        lengths = torch.tensor([len(r) for r in rows])
        mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)  # (B, L)
        return ids, mask

    def to_json(self) -> str:
        """The `tokenizers` JSON (vocab, merges, normaliser...); store it beside the weights."""
        return self._tokenizer.to_str()

    @classmethod
    def from_json(cls, text: str) -> CaptionTokenizer:
        """Rebuild from `to_json` output; CorruptFileError if it is not a valid tokenizer."""
        try:
            json.loads(text)
            tokenizer = Tokenizer.from_str(text)
        except Exception as err:  # tokenizers raises a bare Exception on malformed input
            raise CorruptFileError(f"the stored caption tokenizer is unreadable: {err}") from err
        return cls(tokenizer)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CaptionTokenizer) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return f"CaptionTokenizer(vocab_size={self.vocab_size})"
