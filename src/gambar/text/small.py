"""A small trainable transformer text encoder over a caption-learned BPE tokenizer.

Trained jointly with the generator (as in GLIDE, Nichol et al. 2022, sec. 2.3, and the original
latent-diffusion text models), it suits small data sets in any language, where a frozen English
encoder cannot read the captions. Pre-norm blocks (Xiong et al. 2020) train stably without warmup.
The blocks are written out instead of using nn.TransformerEncoderLayer, whose inference fast path
(nested tensors, fused kernels) takes a different numerical route under no_grad than in training
and cannot be switched off per layer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from gambar.config import check_range, dataclass_from_dict
from gambar.errors import CorruptFileError, InvalidInputError
from gambar.text.base import Encoded, masked_mean
from gambar.text.tokenizer import CaptionTokenizer, train_tokenizer

SMALL_NAME = "small-transformer"
SMALL_VERSION = "1"  # bump when the architecture or tokenisation scheme changes meaning
MLP_RATIO = 4  # hidden width of the feed-forward as in Vaswani et al. 2017
INIT_STD = 0.02  # GPT-2 initialisation (Radford et al. 2019)


# Upper bounds far above anything trained here (the tiny recipes use dim 32-256, depth 1-4, a few
# hundred tokens); they stop a forged config.json from allocating gigabytes before its weights
# are read. Each size alone can still multiply into too much, hence the parameter budget.
MAX_VOCAB_SIZE = 262_144  # 2**18: more than a caption-learned BPE ever reaches
MAX_DIM = 4096
MAX_DEPTH = 64
MAX_HEADS = 64
MAX_LENGTH = 4096  # tokens per caption, [BOS] and [EOS] included
MAX_PARAMETERS = 2**27  # 134 M weights, 512 MiB in fp32: six times the frozen MiniLM-L6


@dataclass(frozen=True)
class SmallTextConfig:
    """Hyperparameters of SmallTextEncoder; vocab_size must cover its tokenizer's ids."""

    vocab_size: int
    dim: int = 256
    depth: int = 4
    heads: int = 4
    max_length: int = 32  # tokens including [BOS] and [EOS]; longer captions are truncated
    dropout: float = 0.0

    def __post_init__(self) -> None:
        # Ranges before divisibility: heads = 0 would otherwise divide by zero.
        for name, low, high in (("vocab_size", 1, MAX_VOCAB_SIZE), ("dim", 1, MAX_DIM),
                                ("depth", 1, MAX_DEPTH), ("heads", 1, MAX_HEADS),
                                ("max_length", 2, MAX_LENGTH)):
            check_range(f"text.{name}", getattr(self, name), low, high)
        check_range("text.dropout", self.dropout, 0.0, 1.0, high_open=True)
        if self.dim % self.heads:
            raise InvalidInputError(f"dim={self.dim} must be divisible by heads={self.heads}")
        if self.parameters > MAX_PARAMETERS:
            raise InvalidInputError(
                f"a text encoder of vocab_size={self.vocab_size}, dim={self.dim}, "
                f"depth={self.depth}, max_length={self.max_length} holds {self.parameters:,} "
                f"weights, over the limit of {MAX_PARAMETERS:,}; make it smaller")

    @property
    def parameters(self) -> int:
        """How many weights SmallTextEncoder holds at this size (embeddings, blocks, norm)."""
        d = self.dim
        # per block: two LayerNorms 4d, qkv 3d^2 + 3d, proj d^2 + d, MLP 2rd^2 + (r + 1)d
        block = (4 + 2 * MLP_RATIO) * d * d + (9 + MLP_RATIO) * d
        return (self.vocab_size + self.max_length) * d + self.depth * block + 2 * d


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)); x: (B, L, D)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, MLP_RATIO * dim), nn.GELU(), nn.Linear(MLP_RATIO * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D), mask: (B, L) bool, True = real token -> (B, L, D)."""
        qkv = rearrange(self.qkv(self.norm1(x)), "b l (k h d) -> k b h l d", k=3, h=self.heads)
        # Mask keys only: real tokens never see padding, so their states do not depend on how
        # much padding the batch has; padding queries still see real keys, so no row is all -inf.
        key_mask = mask[:, None, None, :]  # (B, 1, 1, L)
        dropout = self.dropout if self.training else 0.0
        h = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], attn_mask=key_mask, dropout_p=dropout
        )  # (B, heads, L, D / heads)
        x = x + self.drop(self.proj(rearrange(h, "b h l d -> b l (h d)")))
        return x + self.drop(self.mlp(self.norm2(x)))


class SmallTextEncoder(nn.Module):
    """Trainable TextEncoder: captions -> Encoded(states (B, L, D), mask (B, L), pooled (B, D))."""

    name = SMALL_NAME
    version = SMALL_VERSION
    trainable = True  # the training loop optimises it and saves it with the generator

    def __init__(self, cfg: SmallTextConfig, tokenizer: CaptionTokenizer) -> None:
        super().__init__()
        if tokenizer.vocab_size > cfg.vocab_size:
            raise InvalidInputError(
                f"cfg.vocab_size={cfg.vocab_size} is smaller than the tokenizer's "
                f"{tokenizer.vocab_size} ids"
            )
        self.cfg = cfg
        self.dim = cfg.dim
        self.tokenizer = tokenizer  # a plain attribute: saved as JSON via to_dict, not a tensor
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.position_embedding = nn.Parameter(torch.zeros(cfg.max_length, cfg.dim))
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.heads, cfg.dropout) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2 initialisation; residual projections shrink with depth to keep variance flat."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=INIT_STD)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=INIT_STD)
        nn.init.normal_(self.position_embedding, std=INIT_STD)
        residual_std = INIT_STD / math.sqrt(2 * self.cfg.depth)
        for block in self.blocks:
            nn.init.normal_(block.proj.weight, std=residual_std)
            nn.init.normal_(block.mlp[-1].weight, std=residual_std)

    @classmethod
    def from_captions(
        cls, texts: Sequence[str], vocab_size: int = 1000, **config: Any
    ) -> SmallTextEncoder:
        """Learn a tokenizer from captions, then build an encoder sized to its vocabulary."""
        tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
        return cls(SmallTextConfig(vocab_size=tokenizer.vocab_size, **config), tokenizer)

    @classmethod
    def from_dict(cls, config: dict[str, Any], tokenizer: Any) -> SmallTextEncoder:
        """Rebuild (untrained weights) from `to_dict` output; load the state_dict afterwards.
        Keys, types and ranges of `config` are checked (InvalidInputError naming the key)."""
        cfg = dataclass_from_dict(SmallTextConfig, config, section="text_encoder.config")
        if isinstance(tokenizer, dict):
            tokenizer = json.dumps(tokenizer)
        if isinstance(tokenizer, str):
            tokenizer = CaptionTokenizer.from_json(tokenizer)
        if not isinstance(tokenizer, CaptionTokenizer):
            raise CorruptFileError(f"cannot read a caption tokenizer from {type(tokenizer)}")
        return cls(cfg, tokenizer)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description for config.json: kind, hyperparameters and the tokenizer."""
        return {
            "kind": "small",
            "config": asdict(self.cfg),
            "tokenizer": json.loads(self.tokenizer.to_json()),
        }

    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> Encoded:
        """ids: (B, L) long, mask: (B, L) bool -> Encoded; for callers that tokenise up front."""
        length = ids.shape[1]
        if length > self.cfg.max_length:
            raise InvalidInputError(f"{length} tokens exceed max_length={self.cfg.max_length}")
        x = self.token_embedding(ids) + self.position_embedding[:length]  # (B, L, D)
        for block in self.blocks:
            x = block(x, mask)
        states = self.norm(x) * mask.unsqueeze(-1).to(x.dtype)  # zero padding, as Encoded.cat does
        # Mean over real tokens ([BOS] and [EOS] included) rather than the [BOS] state: every
        # token gets gradient from the pooled loss from step one, and it matches the frozen
        # encoder's recipe; [BOS] pooling only works once attention has learned to gather there.
        return Encoded(states=states, mask=mask, pooled=masked_mean(states, mask))

    def forward(self, texts: Sequence[str]) -> Encoded:
        """Captions -> Encoded(states (B, L, D), mask (B, L) bool, pooled (B, D))."""
        ids, mask = self.tokenizer.encode(texts, max_length=self.cfg.max_length)
        device = self.token_embedding.weight.device
        return self.encode_ids(ids.to(device), mask.to(device))
