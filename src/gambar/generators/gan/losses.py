"""The GAN family's loss terms: the adversarial ones (hinge, or the paper's log loss) and the
three contrastive terms of XMC-GAN (Zhang et al. 2021), all symmetric InfoNCE over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WORD_ATTENTION = 4.0  # sharpness of a word's attention over regions (AttnGAN's gamma_1)
WORD_POOLING = 5.0  # of the log-sum-exp over a caption's words (AttnGAN's gamma_2)


def d_real(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The discriminator's loss on inputs it should call real."""
    return F.relu(1 - logits).mean() if kind == "hinge" else F.softplus(-logits).mean()


def d_fake(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The discriminator's loss on inputs it should call fake."""
    return F.relu(1 + logits).mean() if kind == "hinge" else F.softplus(logits).mean()


def g_adversarial(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The generator's loss (hinge GAN's -D, or the non-saturating -log D)."""
    return -logits.mean() if kind == "hinge" else F.softplus(-logits).mean()


def info_nce(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE of a (B, B) score matrix whose diagonal holds the matching pairs."""
    target = torch.arange(len(scores), device=scores.device)
    logits = scores / temperature
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def cosine_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, B) cosine similarities of every row of a with every row of b."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def word_region_scores(regions: torch.Tensor, words: torch.Tensor, mask: torch.Tensor
                       ) -> torch.Tensor:
    """(B_images, B_captions) scores of XMC-GAN's region-word term (AttnGAN's DAMSM form).

    For every image i and caption j, each word of j attends over the regions of i; the score
    pools, over j's real words, the cosine between each word and what it attended to. regions
    (B, R, E), words (B, L, E), mask (B, L) bool."""
    r = F.normalize(regions, dim=-1)
    w = F.normalize(words, dim=-1)
    sim = torch.einsum("ire,jle->ijlr", r, w)  # word l of caption j against region r of image i
    context = torch.einsum("ijlr,ire->ijle", torch.softmax(WORD_ATTENTION * sim, dim=-1), r)
    cos = F.cosine_similarity(context, w[None].expand_as(context), dim=-1)  # (i, j, l)
    cos = cos.masked_fill(~mask[None], float("-inf"))
    return torch.logsumexp(WORD_POOLING * cos, dim=-1) / WORD_POOLING
