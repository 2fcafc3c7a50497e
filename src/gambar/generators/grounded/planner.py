"""The layout stage: a prompt's token states -> objects, each a phrase of the prompt and a box.

A small transformer decoder writes a layout as a sequence, six choices per object, in the spirit
of LayoutGPT / LayoutTransformer (Gupta et al. 2021) but reading a frozen text encoder:

    start, end   pointers into the prompt's tokens: the phrase that names the object (a pointer
                 network, Vinyals et al. 2015); `start` may point at STOP, which ends the layout
    x0, y0, x1, y1   box edges, each one of `bins` classes over [0, 1]

Pointers make the stage language-agnostic (it never names a colour or a shape: it points at the
words that do) and let any captioned boxes teach it, COCO's as well as gambar's shapes. Box edges
are sampled, so layouts vary with the seed; each edge is conditioned on everything written
before it, which is how "above" or "to the left of" holds between two sampled boxes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gambar.config import check_range

FIELDS = ("start", "end", "x0", "y0", "x1", "y1")
STOP = 0  # memory slot 0 is the learned STOP vector; token i of the prompt is slot i + 1


@dataclass(frozen=True)
class PlannerConfig:
    text_dim: int = 384
    width: int = 128
    layers: int = 3
    heads: int = 4
    max_objects: int = 8
    bins: int = 64  # box edges are classes of 1/bins of the image side
    # What the stage reads: "minilm" = the frozen encoder's token states; "tokens" = the same
    # word-piece ids through an embedding and encoder learned from the captions (the ablation of
    # MiniLM's English-centred vocabulary for Indonesian).
    reads: str = "minilm"
    vocab_size: int = 30522  # word pieces of MiniLM's tokenizer ("tokens" only)
    max_tokens: int = 64

    def __post_init__(self) -> None:
        check_range("planner.text_dim", self.text_dim, 1, 4096)
        check_range("planner.width", self.width, 8, 1024)
        check_range("planner.layers", self.layers, 1, 12)
        check_range("planner.heads", self.heads, 1, 16)
        check_range("planner.max_objects", self.max_objects, 1, 16)
        check_range("planner.bins", self.bins, 4, 512)
        if self.reads not in ("minilm", "tokens"):
            raise ValueError(f"planner.reads must be 'minilm' or 'tokens', not {self.reads!r}")
        check_range("planner.vocab_size", self.vocab_size, 2, 1_000_000)
        check_range("planner.max_tokens", self.max_tokens, 2, 4096)
        if self.width % self.heads:
            raise ValueError(f"planner.heads={self.heads} must divide planner.width={self.width}")

    @property
    def length(self) -> int:
        """Longest sequence: six choices per object and the final STOP."""
        return len(FIELDS) * self.max_objects + 1


@dataclass(frozen=True)
class PlannedObject:
    """A sampled object: prompt tokens [start, end] (inclusive) and its box in fractions."""

    start: int
    end: int
    box: tuple[float, float, float, float]


def to_bins(box: Sequence[float], bins: int) -> list[int]:
    """Box (x0, y0, x1, y1) in [0, 1] -> edge classes; x1/y1 name the last covered class."""
    x0, y0, x1, y1 = (float(v) for v in box)
    lo = [min(bins - 1, max(0, math.floor(v * bins))) for v in (x0, y0)]
    # 1e-9: a box already on the grid (x1 = 0.29 at 100 bins) must not gain a bin to rounding
    hi = [min(bins - 1, max(0, math.ceil(v * bins - 1e-9) - 1)) for v in (x1, y1)]
    return [lo[0], lo[1], max(hi[0], lo[0]), max(hi[1], lo[1])]


def from_bins(edges: Sequence[int], bins: int) -> tuple[float, float, float, float]:
    """Edge classes -> box (x0, y0, x1, y1) in fractions: x0 = b / bins, x1 = (b + 1) / bins."""
    x0, y0, x1, y1 = edges
    return (x0 / bins, y0 / bins, (x1 + 1) / bins, (y1 + 1) / bins)


def encode_targets(objects: Sequence[tuple[int, int, Sequence[float]]], cfg: PlannerConfig
                   ) -> list[int]:
    """(first token, last token, box) per object -> the choice sequence, STOP-terminated.
    Token indices are positions in the encoder's states (0 = [CLS])."""
    seq: list[int] = []
    for start, end, box in objects[: cfg.max_objects]:
        seq += [start + 1, end + 1, *to_bins(box, cfg.bins)]
    return [*seq, STOP]


class LayoutPlanner(nn.Module):
    """Autoregressive layout decoder; `loss` trains it, `sample` draws one layout."""

    def __init__(self, cfg: PlannerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        if cfg.reads == "minilm":
            self.memory_in = nn.Linear(cfg.text_dim, w)
        else:
            self.embed = nn.Embedding(cfg.vocab_size, w)
            self.position = nn.Embedding(cfg.max_tokens, w)
            self.encoder = nn.TransformerEncoder(
                nn.TransformerEncoderLayer(w, cfg.heads, 4 * w, dropout=0.0, batch_first=True,
                                           norm_first=True), 2)
        self.stop = nn.Parameter(torch.randn(w) * 0.02)
        self.bos = nn.Parameter(torch.zeros(w))
        self.field = nn.Embedding(len(FIELDS), w)
        self.slot = nn.Embedding(cfg.max_objects + 1, w)
        self.coord = nn.Embedding(4 * cfg.bins, w)
        layer = nn.TransformerDecoderLayer(w, cfg.heads, 4 * w, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.layers)
        self.norm = nn.LayerNorm(w)
        self.query = nn.Linear(w, w)
        self.key = nn.Linear(w, w)
        self.coord_out = nn.Linear(w, 4 * cfg.bins)

    # ---- pieces ---------------------------------------------------------------------------
    def _memory(self, states: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L + 1, W) memory with STOP first, and its (B, L + 1) validity. `states` are the
        encoder's (B, L, D) states, or (B, L) word-piece ids when the stage reads "tokens"."""
        b = states.shape[0]
        if self.cfg.reads == "minilm":
            words = self.memory_in(states.float())
        else:
            ids = states[:, : self.cfg.max_tokens].clamp(0, self.cfg.vocab_size - 1)
            mask = mask[:, : self.cfg.max_tokens]
            x = self.embed(ids) + self.position(torch.arange(ids.shape[1], device=ids.device))
            words = self.encoder(x, src_key_padding_mask=~mask)
        mem = torch.cat([self.stop.expand(b, 1, -1), words], dim=1)
        valid = torch.cat([mask.new_ones(b, 1), mask], dim=1)
        return mem, valid

    def _inputs(self, values: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Decoder inputs (B, T, W) for choices values (B, T): step k sees choice k - 1."""
        b, t = values.shape
        steps = torch.arange(t, device=values.device)
        field, slot = steps % len(FIELDS), steps // len(FIELDS)
        prev = torch.cat([values.new_zeros(b, 1), values[:, :-1]], dim=1)
        prev_field = (steps - 1) % len(FIELDS)
        is_pointer = (prev_field < 2).expand(b, t)
        idx = prev.clamp(max=memory.shape[1] - 1)
        pointed = memory.gather(1, idx.unsqueeze(-1).expand(-1, -1, memory.shape[-1]))
        coord_idx = ((prev_field - 2).clamp(min=0) * self.cfg.bins + prev.clamp(
            max=self.cfg.bins - 1))
        coords = self.coord(coord_idx)
        x = torch.where(is_pointer.unsqueeze(-1), pointed, coords)
        x = torch.cat([self.bos.expand(b, 1, -1), x[:, 1:]], dim=1)
        return x + self.field(field) + self.slot(slot.clamp(max=self.cfg.max_objects))

    def _heads(self, h: torch.Tensor, memory: torch.Tensor, valid: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pointer logits (B, T, L + 1) and edge logits (B, T, 4, bins)."""
        h = self.norm(h)
        q, k = self.query(h), self.key(memory)
        pointer = q @ k.transpose(1, 2) / math.sqrt(self.cfg.width)
        pointer = pointer.masked_fill(~valid.unsqueeze(1), float("-inf"))
        edges = self.coord_out(h).unflatten(-1, (4, self.cfg.bins))
        return pointer, edges

    def _run(self, values: torch.Tensor, memory: torch.Tensor, valid: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._inputs(values, memory)
        t = x.shape[1]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=x.device), 1)
        h = self.decoder(x, memory, tgt_mask=causal, memory_key_padding_mask=~valid)
        return self._heads(h, memory, valid)

    # ---- training -------------------------------------------------------------------------
    def loss(self, states: torch.Tensor, mask: torch.Tensor, targets: Sequence[Sequence[int]]
             ) -> torch.Tensor:
        """Cross-entropy of the target choice sequences (from `encode_targets`) per step."""
        b = states.shape[0]
        t = max(len(s) for s in targets)
        values = torch.zeros(b, t, dtype=torch.long)
        real = torch.zeros(b, t, dtype=torch.bool)
        for i, seq in enumerate(targets):
            values[i, : len(seq)] = torch.tensor(seq)
            real[i, : len(seq)] = True
        memory, valid = self._memory(states, mask)
        pointer, edges = self._run(values, memory, valid)
        steps = torch.arange(t) % len(FIELDS)
        is_pointer = (steps < 2).expand(b, t)
        ptr_loss = F.cross_entropy(pointer[is_pointer & real], values[is_pointer & real],
                                   reduction="sum")
        coord_real = ~is_pointer & real
        field = (steps - 2).clamp(min=0).expand(b, t)[coord_real]
        logits = edges[coord_real].gather(1, field.view(-1, 1, 1).expand(-1, 1, self.cfg.bins))
        box_loss = F.cross_entropy(logits.squeeze(1), values[coord_real], reduction="sum")
        return (ptr_loss + box_loss) / real.sum()

    # ---- sampling -------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, states: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator,
               temperature: float = 1.0) -> list[PlannedObject]:
        """One layout for one prompt (states (1, L, D)). Pointers are taken greedily (the
        words are what they are); box edges are sampled at `temperature` with uniforms from
        `rng`, so a seed gives one layout whatever else is in the batch."""
        memory, valid = self._memory(states, mask)
        n_tokens = int(mask.sum())
        if self.cfg.reads == "tokens":  # the learned encoder reads the first max_tokens only
            n_tokens = min(n_tokens, self.cfg.max_tokens)
        values: list[int] = []
        objects: list[PlannedObject] = []
        for k in range(self.cfg.length):
            field = k % len(FIELDS)
            if field == 0 and len(objects) == self.cfg.max_objects:
                break
            seq = torch.tensor([[*values, 0]], dtype=torch.long)
            pointer, edges = self._run(seq, memory, valid)
            if field < 2:
                logits = pointer[0, -1].clone()
                if field == 0:
                    # only words can start a phrase; [CLS]/[SEP] never name an object
                    logits[1] = logits[n_tokens] = float("-inf")
                else:  # end at or after the start, on a word
                    logits[: values[-1]] = float("-inf")
                    logits[n_tokens:] = float("-inf")
                choice = int(logits.argmax())
                if field == 0 and choice == STOP:
                    break
            else:
                logits = edges[0, -1, field - 2].float().clone()
                if field >= 4:  # x1 / y1: not before x0 / y0
                    logits[: values[-2]] = float("-inf")
                probs = torch.softmax(logits / max(temperature, 1e-4), dim=0).double().numpy()
                cdf = np.cumsum(probs)
                choice = int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"),
                                 self.cfg.bins - 1))
            values.append(choice)
            if field == len(FIELDS) - 1:
                s, e, *edges_ = values[-6:]
                objects.append(PlannedObject(s - 1, e - 1, from_bins(edges_, self.cfg.bins)))
        return objects


def planner_input(encoder: nn.Module, texts: Sequence[str], cfg: PlannerConfig
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """What the layout stage reads for `texts`: the frozen encoder's token states, or its
    word-piece ids (cfg.reads == "tokens"), with the (B, L) mask of real tokens."""
    if cfg.reads == "minilm":
        enc = encoder(list(texts))
        return enc.states, enc.mask
    return encoder.tokenize(list(texts))  # type: ignore[operator]
