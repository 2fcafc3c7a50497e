"""Grounding a layout in the image stage: each object's phrase embedding and box, as painted
layout channels (GauGAN/Make-A-Scene-style maps) and/or GLIGEN grounding tokens.

Phrases are embedded by the frozen MiniLM, so a layout the user writes ("a red circle" in a box)
and one the layout stage samples (a span of the prompt) reach the image stage the same way: either
its pooled sentence vector, or the mean of its input word-piece embeddings (a bag of words, so a
colour-shape pair never seen together is still the sum of parts that were).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gambar.config import check_range
from gambar.text.base import Encoded

PHRASE_EMBEDDINGS = ("sentence", "words")


@dataclass(frozen=True)
class GroundingConfig:
    """`[grounding]`: how the image stage sees the layout."""

    channels: int = 16  # painted layout channels (1 box mask + channels - 1 features); 0 = none
    tokens: bool = True  # GLIGEN grounding tokens appended to the cross-attention context
    fourier: int = 8  # frequencies per box coordinate in a grounding token
    phrase: str = "sentence"  # "sentence": pooled MiniLM states; "words": mean word-piece embedding

    def __post_init__(self) -> None:
        if self.phrase not in PHRASE_EMBEDDINGS:
            raise ValueError(f"grounding.phrase must be one of {', '.join(PHRASE_EMBEDDINGS)}, "
                             f"got {self.phrase!r}")
        check_range("grounding.channels", self.channels, 0, 128)
        check_range("grounding.fourier", self.fourier, 1, 64)
        if self.channels == 1:
            raise ValueError("grounding.channels must be 0 or at least 2 (mask + features)")
        if self.channels == 0 and not self.tokens:
            raise ValueError("grounding needs layout channels or grounding tokens (or both)")


@dataclass(frozen=True)
class LayoutBatch:
    """Layouts of a batch: phrase embeddings (B, K, P), boxes (B, K, 4) in fractions, and which
    of the K slots hold an object (B, K) bool. K may be 0 (no layout anywhere)."""

    phrases: torch.Tensor
    boxes: torch.Tensor
    valid: torch.Tensor

    @staticmethod
    def build(layouts: Sequence[Sequence[tuple[torch.Tensor, Sequence[float]]]], dim: int
              ) -> LayoutBatch:
        """From per-image lists of (phrase embedding (P,), box)."""
        k = max((len(lay) for lay in layouts), default=0)
        b = len(layouts)
        phrases, boxes = torch.zeros(b, k, dim), torch.zeros(b, k, 4)
        valid = torch.zeros(b, k, dtype=torch.bool)
        for i, lay in enumerate(layouts):
            for j, (emb, box) in enumerate(lay):
                phrases[i, j], boxes[i, j], valid[i, j] = emb, torch.tensor(box), True
        return LayoutBatch(phrases, boxes, valid)

    @staticmethod
    def cat(parts: Sequence[LayoutBatch]) -> LayoutBatch:
        k = max(p.valid.shape[1] for p in parts)

        def pad(t: torch.Tensor) -> torch.Tensor:
            extra = k - t.shape[1]
            return t if extra == 0 else torch.cat(
                [t, t.new_zeros((t.shape[0], extra, *t.shape[2:]))], dim=1)

        return LayoutBatch(torch.cat([pad(p.phrases) for p in parts]),
                           torch.cat([pad(p.boxes) for p in parts]),
                           torch.cat([pad(p.valid) for p in parts]))


@dataclass(frozen=True)
class GroundedCond:
    """The image stage's conditioning: the encoded prompt and its layout (batched by `cat`,
    which the samplers' classifier-free guidance uses)."""

    text: Encoded
    layout: LayoutBatch

    @staticmethod
    def cat(parts: Sequence[GroundedCond]) -> GroundedCond:
        return GroundedCond(Encoded.cat([p.text for p in parts]),
                            LayoutBatch.cat([p.layout for p in parts]))


def box_masks(boxes: torch.Tensor, valid: torch.Tensor, size: int) -> torch.Tensor:
    """(B, K, H, W) 1 where a pixel's centre lies in the object's box (valid slots only)."""
    centres = (torch.arange(size, dtype=boxes.dtype, device=boxes.device) + 0.5) / size
    x0, y0, x1, y1 = (boxes[..., i, None] for i in range(4))  # (B, K, 1)
    in_x = (centres >= x0) & (centres < x1)  # (B, K, W)
    in_y = (centres >= y0) & (centres < y1)  # (B, K, H)
    return (in_y.unsqueeze(-1) & in_x.unsqueeze(-2) & valid[..., None, None]).to(boxes.dtype)


def fourier_features(boxes: torch.Tensor, frequencies: int) -> torch.Tensor:
    """(..., 4) boxes -> (..., 4 * 2 * frequencies) sin/cos at octave frequencies (GLIGEN)."""
    scales = (2.0 ** torch.arange(frequencies, dtype=boxes.dtype, device=boxes.device)) * math.pi
    angles = boxes.unsqueeze(-1) * scales  # (..., 4, F)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


class Grounding(nn.Module):
    """Turns a LayoutBatch into painted channels and grounding tokens."""

    def __init__(self, cfg: GroundingConfig, phrase_dim: int, text_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.channels:
            self.paint = nn.Linear(phrase_dim, cfg.channels - 1)
        if cfg.tokens:
            width = phrase_dim + 4 * 2 * cfg.fourier
            self.token = nn.Sequential(nn.Linear(width, text_dim), nn.SiLU(),
                                       nn.Linear(text_dim, text_dim))

    def channels(self, layout: LayoutBatch, size: int) -> torch.Tensor | None:
        """(B, channels, size, size): a box-mask channel, then the phrase features in each box
        (summed where boxes overlap)."""
        if not self.cfg.channels:
            return None
        masks = box_masks(layout.boxes.float(), layout.valid, size)  # (B, K, H, W)
        feats = torch.cat([torch.ones_like(layout.phrases[..., :1]),
                           self.paint(layout.phrases.float())], dim=-1)  # (B, K, C)
        return torch.einsum("bkhw,bkc->bchw", masks, feats.to(masks.dtype))

    def context(self, text: Encoded, layout: LayoutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-attention context: the prompt's states, then one token per object."""
        if not self.cfg.tokens or layout.valid.shape[1] == 0:
            return text.states, text.mask
        feats = torch.cat([layout.phrases.float(),
                           fourier_features(layout.boxes.float(), self.cfg.fourier)], dim=-1)
        tokens = self.token(feats) * layout.valid.unsqueeze(-1)
        return (torch.cat([text.states, tokens.to(text.states.dtype)], dim=1),
                torch.cat([text.mask, layout.valid], dim=1))


def word_bag(encoder: nn.Module, phrases: Sequence[str]) -> torch.Tensor:
    """(N, D) unit-norm mean of each phrase's input word-piece embeddings ([CLS]/[SEP] left out):
    no context mixes the words, so the embedding of "a purple star" is that of its parts."""
    ids, mask = encoder.tokenize(phrases)  # type: ignore[operator]
    table = encoder.model.embeddings.word_embeddings.weight  # type: ignore[union-attr]
    special = torch.tensor(encoder.tokenizer.all_special_ids)  # type: ignore[union-attr]
    keep = (mask & ~torch.isin(ids, special)).to(table.dtype).unsqueeze(-1)
    with torch.no_grad():
        summed = (table[ids.to(table.device)] * keep.to(table.device)).sum(1)
    return torch.nn.functional.normalize(summed.float(), dim=-1)


class PhraseCache:
    """Phrase -> embedding by the frozen encoder (`mode` as GroundingConfig.phrase), memoised
    (training repeats phrases)."""

    def __init__(self, encoder: nn.Module, mode: str = "sentence", limit: int = 200_000) -> None:
        self.encoder, self.mode, self.limit = encoder, mode, limit
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, phrases: Sequence[str]) -> list[torch.Tensor]:
        missing = sorted({p for p in phrases if p not in self.cache})
        if missing:
            if len(self.cache) + len(missing) > self.limit:
                self.cache.clear()
            vectors = (word_bag(self.encoder, missing) if self.mode == "words"
                       else self.encoder(missing).pooled.float())
            self.cache.update(zip(missing, vectors, strict=True))
        return [self.cache[p] for p in phrases]
