"""A CLIP-like contrastive model (Radford et al. 2021): the evaluator's image features and its
text-image similarity (CLIP score, R-precision); later reranking and CLIP guidance."""

from gambar.contrastive.model import (
    PRESETS,
    ContrastiveConfig,
    ContrastiveModel,
    ContrastiveNet,
    contrastive_loss,
    load_contrastive,
)

__all__ = [
    "PRESETS",
    "ContrastiveConfig",
    "ContrastiveModel",
    "ContrastiveNet",
    "contrastive_loss",
    "load_contrastive",
]
