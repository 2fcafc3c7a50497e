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
from gambar.inputs import Layout

FIELDS = ("start", "end", "c0", "c1", "c2", "c3")  # two pointers, then four box numbers
STOP = 0  # memory slot 0 is the learned STOP vector; token i of the prompt is slot i + 1
BOXES = ("edges", "relative")
READS = ("minilm", "tokens", "both")


@dataclass(frozen=True)
class PlannerConfig:
    text_dim: int = 384
    width: int = 128
    layers: int = 3
    heads: int = 4
    max_objects: int = 8
    bins: int = 64  # box numbers are classes of 1/bins of the image side
    # How a box is written. "edges": x0, y0, x1, y1, each a class over [0, 1]. "relative": the
    # centre (the first object's over [0, 1]; every later one as the offset from the previous
    # centre, 2 * bins classes over [-1, 1]), then width and height. Relative offsets make "to
    # the left of" one direct choice ("dx > 0.25") instead of a comparison of two edge classes,
    # which the edge form had not learned after 1,300 steps (position 0.16).
    boxes: str = "edges"
    # Box numbers also enter as sin/cos of their value at this many octaves (0 = class embeddings
    # only), so later choices can compare numbers instead of unrelated classes.
    coord_features: int = 0
    # Every step also sees the mean of the prompt's word states (the whole sentence at once),
    # so reading the relation word does not rest on cross-attention alone.
    sentence: bool = False
    # What the stage reads: "minilm" = the frozen encoder's token states; "tokens" = the same
    # word-piece ids through an embedding and encoder learned from the captions (the ablation of
    # MiniLM's English-centred vocabulary for Indonesian); "both" = their sum, then that encoder
    # (MiniLM's states generalise to unseen wording, learned embeddings tell "above" from
    # "below", which MiniLM's states barely do).
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
        check_range("planner.coord_features", self.coord_features, 0, 16)
        if self.boxes not in BOXES:
            raise ValueError(f"planner.boxes must be one of {', '.join(BOXES)}, not {self.boxes!r}")
        if self.reads not in READS:
            raise ValueError(f"planner.reads must be one of {', '.join(READS)}, not "
                             f"{self.reads!r}")
        check_range("planner.vocab_size", self.vocab_size, 2, 1_000_000)
        check_range("planner.max_tokens", self.max_tokens, 2, 4096)
        if self.width % self.heads:
            raise ValueError(f"planner.heads={self.heads} must divide planner.width={self.width}")

    @property
    def length(self) -> int:
        """Longest sequence: six choices per object and the final STOP."""
        return len(FIELDS) * self.max_objects + 1

    @property
    def classes(self) -> tuple[int, ...]:
        """Class count of each kind of box number (see `kind`)."""
        b = self.bins
        return (b, b, b, b) if self.boxes == "edges" else (b, b, 2 * b, 2 * b, b, b)

    def kind(self, slot: int, number: int) -> int:
        """Which kind of number the `number`-th (0..3) box number of object `slot` is."""
        if self.boxes == "edges":
            return number  # x0, y0, x1, y1
        if number < 2:  # centre: absolute for the first object, an offset for the others
            return number if slot == 0 else 2 + number
        return number + 2  # width, height


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


def _clamp(v: int, n: int) -> int:
    return min(n - 1, max(0, v))


def decode_numbers(numbers: Sequence[Sequence[int]], cfg: PlannerConfig
                   ) -> list[tuple[float, float, float, float]]:
    """Each object's four box classes -> boxes (x0, y0, x1, y1) in fractions, clipped to the
    image. Relative centres accumulate from the first object's."""
    if cfg.boxes == "edges":
        return [from_bins(n, cfg.bins) for n in numbers]
    b, boxes = cfg.bins, []
    cx = cy = 0.0
    for slot, (u, v, w, h) in enumerate(numbers):
        du, dv = (u + 0.5) / b, (v + 0.5) / b
        cx, cy = (du, dv) if slot == 0 else (cx + du - 1, cy + dv - 1)
        half_w, half_h = (w + 0.5) / b / 2, (h + 0.5) / b / 2
        x0, y0 = min(max(cx - half_w, 0.0), 1.0), min(max(cy - half_h, 0.0), 1.0)
        x1, y1 = min(max(cx + half_w, 0.0), 1.0), min(max(cy + half_h, 0.0), 1.0)
        boxes.append((x0, y0, max(x1, x0 + 1 / b) if x1 <= x0 else x1,
                      max(y1, y0 + 1 / b) if y1 <= y0 else y1))
    return boxes


def encode_numbers(boxes: Sequence[Sequence[float]], cfg: PlannerConfig) -> list[list[int]]:
    """Boxes -> each object's four box classes (the inverse of `decode_numbers` up to bins).
    A relative offset is taken from the previous centre as decoded, so errors never add up."""
    if cfg.boxes == "edges":
        return [to_bins(box, cfg.bins) for box in boxes]
    b, out = cfg.bins, []
    px = py = 0.0
    for slot, (x0, y0, x1, y1) in enumerate(boxes):
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        if slot == 0:
            u, v = _clamp(math.floor(cx * b), b), _clamp(math.floor(cy * b), b)
            px, py = (u + 0.5) / b, (v + 0.5) / b
        else:
            u = _clamp(math.floor((cx - px + 1) * b), 2 * b)
            v = _clamp(math.floor((cy - py + 1) * b), 2 * b)
            px, py = px + (u + 0.5) / b - 1, py + (v + 0.5) / b - 1
        w = _clamp(math.floor((x1 - x0) * b), b)
        h = _clamp(math.floor((y1 - y0) * b), b)
        out.append([u, v, w, h])
    return out


def encode_targets(objects: Sequence[tuple[int, int, Sequence[float]]], cfg: PlannerConfig
                   ) -> list[int]:
    """(first token, last token, box) per object -> the choice sequence, STOP-terminated.
    Token indices are positions in the encoder's states (0 = [CLS])."""
    objects = list(objects[: cfg.max_objects])
    numbers = encode_numbers([box for _, _, box in objects], cfg)
    seq: list[int] = []
    for (start, end, _), nums in zip(objects, numbers, strict=True):
        seq += [start + 1, end + 1, *nums]
    return [*seq, STOP]


class LayoutPlanner(nn.Module):
    """Autoregressive layout decoder; `loss` trains it, `sample` draws one layout."""

    def __init__(self, cfg: PlannerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        if cfg.reads != "tokens":
            self.memory_in = nn.Linear(cfg.text_dim, w)
        if cfg.reads != "minilm":
            self.embed = nn.Embedding(cfg.vocab_size, w)
            self.position = nn.Embedding(cfg.max_tokens, w)
            self.encoder = nn.TransformerEncoder(
                nn.TransformerEncoderLayer(w, cfg.heads, 4 * w, dropout=0.0, batch_first=True,
                                           norm_first=True), 2, enable_nested_tensor=False)
        self.stop = nn.Parameter(torch.randn(w) * 0.02)
        self.bos = nn.Parameter(torch.zeros(w))
        self.field = nn.Embedding(len(FIELDS), w)
        self.slot = nn.Embedding(cfg.max_objects + 1, w)
        # one table / one output layer over every kind of box number, each kind a slice of it
        self.offsets = [sum(cfg.classes[:k]) for k in range(len(cfg.classes))]
        self.coord = nn.Embedding(sum(cfg.classes), w)
        if cfg.coord_features:
            self.coord_value = nn.Linear(2 * cfg.coord_features, w)
        layer = nn.TransformerDecoderLayer(w, cfg.heads, 4 * w, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.layers)
        self.norm = nn.LayerNorm(w)
        self.query = nn.Linear(w, w)
        self.key = nn.Linear(w, w)
        self.coord_out = nn.Linear(w, sum(cfg.classes))
        if cfg.sentence:
            self.sentence = nn.Linear(w, w)

    # ---- pieces ---------------------------------------------------------------------------
    def _memory(self, states: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L + 1, W) memory with STOP first, and its (B, L + 1) validity. `states` are the
        encoder's (B, L, D) states, (B, L) word-piece ids when the stage reads "tokens", or both
        as (B, L, D + 1) with the ids last (`planner_input`)."""
        b = states.shape[0]
        if self.cfg.reads == "minilm":
            words = self.memory_in(states.float())
        else:
            n = self.cfg.max_tokens
            ids = (states[:, :n] if self.cfg.reads == "tokens" else states[:, :n, -1]).long()
            ids, mask = ids.clamp(0, self.cfg.vocab_size - 1), mask[:, :n]
            x = self.embed(ids) + self.position(torch.arange(ids.shape[1], device=ids.device))
            if self.cfg.reads == "both":
                x = x + self.memory_in(states[:, :n, :-1].float())
            words = self.encoder(x, src_key_padding_mask=~mask)
        mem = torch.cat([self.stop.expand(b, 1, -1), words], dim=1)
        valid = torch.cat([mask.new_ones(b, 1), mask], dim=1)
        return mem, valid

    def _kinds(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per step of a length-t sequence: the kind of box number it writes (-1 for pointers)
        and that kind's first class in the shared table."""
        kinds = [-1 if k % 6 < 2 else self.cfg.kind(k // 6, k % 6 - 2) for k in range(t)]
        offsets = [0 if k < 0 else self.offsets[k] for k in kinds]
        return torch.tensor(kinds), torch.tensor(offsets)

    def _values(self, values: torch.Tensor) -> torch.Tensor:
        """(B, T) choices -> the value in [0, 1] of each box number, for `coord_features`:
        the decoded edge, centre (relative centres accumulated) or side."""
        b, t = values.shape
        bins = self.cfg.bins
        kinds, _ = self._kinds(t)
        out = (values.float() + 0.5) / bins
        if self.cfg.boxes == "relative":
            for number in (0, 1):  # centre x, y: a running sum over the objects
                cols = [k for k in range(t) if k % 6 == number + 2]
                if cols:
                    steps = out[:, cols] - torch.tensor(
                        [0.0 if k // 6 == 0 else 1.0 for k in cols])
                    out[:, cols] = steps.cumsum(dim=1)
        return out.masked_fill((kinds < 0).expand(b, t), 0.0)

    def _inputs(self, values: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Decoder inputs (B, T, W) for choices values (B, T): step k sees choice k - 1."""
        b, t = values.shape
        steps = torch.arange(t, device=values.device)
        field, slot = steps % len(FIELDS), steps // len(FIELDS)
        kinds, offsets = self._kinds(t)
        prev = torch.cat([values.new_zeros(b, 1), values[:, :-1]], dim=1)
        prev_kind = torch.cat([kinds.new_full((1,), -1), kinds[:-1]])
        prev_offset = torch.cat([offsets.new_zeros(1), offsets[:-1]])
        is_pointer = (prev_kind < 0).expand(b, t)
        idx = prev.clamp(max=memory.shape[1] - 1)
        pointed = memory.gather(1, idx.unsqueeze(-1).expand(-1, -1, memory.shape[-1]))
        limit = torch.tensor([self.cfg.classes[k] - 1 if k >= 0 else 0 for k in prev_kind])
        coords = self.coord(prev_offset + torch.minimum(prev, limit))
        if self.cfg.coord_features:
            value = self._values(values)
            value = torch.cat([value.new_zeros(b, 1), value[:, :-1]], dim=1)
            octaves = 2.0 ** torch.arange(self.cfg.coord_features, device=value.device)
            angles = value.unsqueeze(-1) * octaves * math.pi
            coords = coords + self.coord_value(torch.cat([angles.sin(), angles.cos()], -1))
        x = torch.where(is_pointer.unsqueeze(-1), pointed, coords)
        x = torch.cat([self.bos.expand(b, 1, -1), x[:, 1:]], dim=1)
        return x + self.field(field) + self.slot(slot.clamp(max=self.cfg.max_objects))

    def _heads(self, h: torch.Tensor, memory: torch.Tensor, valid: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pointer logits (B, T, L + 1) and box-number logits (B, T, all classes), each step's
        own kind left open and every other class at -inf."""
        h = self.norm(h)
        q, k = self.query(h), self.key(memory)
        pointer = q @ k.transpose(1, 2) / math.sqrt(self.cfg.width)
        pointer = pointer.masked_fill(~valid.unsqueeze(1), float("-inf"))
        numbers = self.coord_out(h)
        kinds, offsets = self._kinds(h.shape[1])
        sizes = torch.tensor([self.cfg.classes[k] if k >= 0 else 0 for k in kinds])
        cls = torch.arange(numbers.shape[-1])
        open_ = (cls >= offsets[:, None]) & (cls < (offsets + sizes)[:, None])  # (T, C)
        return pointer, numbers.masked_fill(~open_, float("-inf"))

    def _run(self, values: torch.Tensor, memory: torch.Tensor, valid: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._inputs(values, memory)
        if self.cfg.sentence:
            words, real = memory[:, 1:], valid[:, 1:].unsqueeze(-1).to(memory.dtype)
            mean = (words * real).sum(1) / real.sum(1).clamp(min=1)
            x = x + self.sentence(mean).unsqueeze(1)
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
        pointer, numbers = self._run(values, memory, valid)
        kinds, offsets = self._kinds(t)
        is_pointer = (kinds < 0).expand(b, t)
        ptr_loss = F.cross_entropy(pointer[is_pointer & real], values[is_pointer & real],
                                   reduction="sum")
        box = ~is_pointer & real
        target = (values + offsets)[box]
        box_loss = F.cross_entropy(numbers[box], target, reduction="sum")
        return (ptr_loss + box_loss) / real.sum()

    # ---- sampling -------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, states: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator,
               temperature: float = 1.0) -> list[PlannedObject]:
        """One layout for one prompt (states (1, L, D)). Pointers are taken greedily (the
        words are what they are); box numbers are sampled at `temperature` with uniforms from
        `rng`, so a seed gives one layout whatever else is in the batch."""
        memory, valid = self._memory(states, mask)
        n_tokens = int(mask.sum())
        if self.cfg.reads != "minilm":  # the learned encoder reads the first max_tokens only
            n_tokens = min(n_tokens, self.cfg.max_tokens)
        values: list[int] = []
        starts: list[tuple[int, int]] = []
        numbers_: list[list[int]] = []
        for k in range(self.cfg.length):
            field = k % len(FIELDS)
            if field == 0 and len(starts) == self.cfg.max_objects:
                break
            seq = torch.tensor([[*values, 0]], dtype=torch.long)
            pointer, numbers = self._run(seq, memory, valid)
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
                kind = self.cfg.kind(k // 6, field - 2)
                lo = self.offsets[kind]
                logits = numbers[0, -1, lo: lo + self.cfg.classes[kind]].float().clone()
                if self.cfg.boxes == "edges" and field >= 4:  # x1 / y1: not before x0 / y0
                    logits[: values[-2]] = float("-inf")
                probs = torch.softmax(logits / max(temperature, 1e-4), dim=0).double().numpy()
                cdf = np.cumsum(probs)
                choice = int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"),
                                 len(probs) - 1))
            values.append(choice)
            if field == len(FIELDS) - 1:
                starts.append(tuple(values[-6:-4]))
                numbers_.append(values[-4:])
        boxes = decode_numbers(numbers_, self.cfg)
        objects = [PlannedObject(s - 1, e - 1, box)
                   for (s, e), box in zip(starts, boxes, strict=True)]
        return objects


def planner_input(encoder: nn.Module, texts: Sequence[str], cfg: PlannerConfig
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """What the layout stage reads for `texts`: the frozen encoder's token states, its
    word-piece ids (cfg.reads == "tokens"), or the states with the ids as one more channel
    ("both"); and the (B, L) mask of real tokens."""
    if cfg.reads == "tokens":
        return encoder.tokenize(list(texts))  # type: ignore[operator]
    enc = encoder(list(texts))
    if cfg.reads == "minilm":
        return enc.states, enc.mask
    ids, _ = encoder.tokenize(list(texts))  # type: ignore[operator]
    return torch.cat([enc.states, ids.to(enc.states.dtype).unsqueeze(-1)], dim=-1), enc.mask


LAYOUT_SEED_STREAM = 0x4C41  # "LA": the layout stage's draws never reuse the image noise's


def plan_layout(planner: LayoutPlanner, encoder: nn.Module, prompt: str, seed: int,
                temperature: float = 1.0) -> Layout:
    """The layout `planner` samples for one prompt and seed: each object's box and the words of
    the prompt it points at (an empty prompt: no objects). `encoder` is the frozen MiniLM."""
    from gambar.inputs import Box

    if not prompt.strip():
        return Layout(())
    states, mask = planner_input(encoder, [prompt], planner.cfg)
    offsets = encoder.offsets([prompt])[0]  # type: ignore[operator]
    rng = np.random.default_rng([seed, LAYOUT_SEED_STREAM])
    boxes = []
    for obj in planner.sample(states, mask, rng, temperature):
        start, end = offsets[obj.start][0], offsets[obj.end][1]
        x0, y0, x1, y1 = (round(v, 6) for v in obj.box)
        boxes.append(Box(x0, y0, x1, y1, prompt[start:end]))
    return Layout(tuple(boxes))
