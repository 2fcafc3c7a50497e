"""The GAN family's trainable model: generator + discriminator, and each part's loss.

`GanModel(batch, noise, part="d"|"g")` returns that part's loss, so that under DDP every network
call goes through the wrapped module (the training loop's contract). The text encoder is frozen
and lives outside: the batch carries its outputs.

GAN-INT-CLS (Reed et al. 2016), as the paper has it:
- matching-aware discriminator: D sees (real, right text) as real, and both (real, wrong text)
  and (fake, right text) as fake, weighted 1/2 each;
- GAN-INT: the generator also learns to fool D on text halfway between two captions
  (beta = 0.5, the paper's), which fills the text manifold between the training captions.
XMC-GAN's contrastive terms (Zhang et al. 2021) on the discriminator's shared embeddings:
image-sentence (D on real images, G on fakes), region-word (the same), real-fake image (G).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gambar.generators.gan import losses
from gambar.generators.gan.config import GanConfig
from gambar.generators.gan.layout import ObjectMasks
from gambar.generators.gan.networks import Discriminator, Features, Generator

INTERPOLATION_BETA = 0.5


@dataclass
class GanBatch:
    """Real images and their captions as the frozen encoder gave them."""

    images: torch.Tensor  # (B, 3, S, S) in [-1, 1]
    sentence: torch.Tensor  # (B, D) pooled
    words: torch.Tensor  # (B, L, D) token states
    word_mask: torch.Tensor  # (B, L) bool
    layout: ObjectMasks | None = None  # a layout model's objects (GauGAN)


@dataclass
class GanNoise:
    """One update's noise, drawn by the task from the run's generator (exact resume)."""

    z: torch.Tensor  # (B, z_dim)
    eps: torch.Tensor  # (B, cond_dim): conditioning augmentation
    z_mix: torch.Tensor  # ... and for GAN-INT's interpolated captions
    eps_mix: torch.Tensor


def other_captions(x: torch.Tensor) -> torch.Tensor:
    """Each row paired with the next one's caption (the batch rolled by one): the mismatched
    text of the matching-aware term and GAN-INT's second caption."""
    return x.roll(1, dims=0)


class GanModel(nn.Module):
    def __init__(self, cfg: GanConfig, text_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.generator = Generator(cfg, text_dim)
        self.discriminator = Discriminator(cfg, text_dim)

    def forward(self, batch: GanBatch, noise: GanNoise, part: str
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if part == "d":
            return self.discriminator_loss(batch, noise)
        if part == "g":
            return self.generator_loss(batch, noise)
        raise ValueError(f"part must be 'd' or 'g', not {part!r}")

    def discriminator_loss(self, batch: GanBatch, noise: GanNoise
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg, d = self.cfg, self.discriminator
        with torch.no_grad():
            fake, _ = self.generator(noise.z, batch.sentence, noise.eps, batch.layout)
        real_feats = d.trunk(batch.images, batch.layout)
        real = d.match(real_feats, batch.sentence)
        fake_logits = d.match(d.trunk(fake, batch.layout), batch.sentence)
        loss = losses.d_real(real, cfg.loss)
        logs = {"d_real": real.mean().detach(), "d_fake": fake_logits.mean().detach()}
        if cfg.matching_aware:
            wrong = d.match(real_feats, other_captions(batch.sentence))
            loss = loss + 0.5 * (losses.d_fake(wrong, cfg.loss)
                                 + losses.d_fake(fake_logits, cfg.loss))
            logs["d_wrong"] = wrong.mean().detach()
        else:
            loss = loss + losses.d_fake(fake_logits, cfg.loss)
        return self._contrastive(loss, logs, real_feats, batch, real_image=None, prefix="d")

    def generator_loss(self, batch: GanBatch, noise: GanNoise
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg, d = self.cfg, self.discriminator
        fake, kl = self.generator(noise.z, batch.sentence, noise.eps, batch.layout)
        feats = d.trunk(fake, batch.layout)
        loss = losses.g_adversarial(d.match(feats, batch.sentence), cfg.loss)
        logs: dict[str, torch.Tensor] = {"g_adv": loss.detach()}
        if cfg.ca and cfg.ca_weight:
            loss = loss + cfg.ca_weight * kl
            logs["kl"] = kl.detach()
        if cfg.interpolation:
            mixed = (INTERPOLATION_BETA * batch.sentence
                     + (1 - INTERPOLATION_BETA) * other_captions(batch.sentence))
            between, _ = self.generator(noise.z_mix, mixed, noise.eps_mix, batch.layout)
            interp = losses.g_adversarial(d.match(d.trunk(between, batch.layout), mixed),
                                          cfg.loss)
            loss = loss + cfg.interpolation * interp
            logs["g_int"] = interp.detach()
        real_image = None
        if cfg.image_weight:
            with torch.no_grad():
                real_image = d.image_embedding(d.trunk(batch.images, batch.layout))
        return self._contrastive(loss, logs, feats, batch, real_image, prefix="g")

    def _contrastive(self, loss: torch.Tensor, logs: dict[str, torch.Tensor], feats: Features,
                     batch: GanBatch, real_image: torch.Tensor | None, prefix: str
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """XMC-GAN's terms on `feats` (real images for D, fakes for G), added when weighted."""
        cfg, d = self.cfg, self.discriminator
        if cfg.sentence_weight:
            scores = losses.cosine_scores(d.image_embedding(feats),
                                          d.sentence_embed(batch.sentence))
            term = losses.info_nce(scores, cfg.temperature)
            loss = loss + cfg.sentence_weight * term
            logs[f"{prefix}_sent"] = term.detach()
        if cfg.word_weight:
            scores = losses.word_region_scores(d.region_embeddings(feats),
                                               d.word_embed(batch.words), batch.word_mask)
            term = losses.info_nce(scores, cfg.temperature)
            loss = loss + cfg.word_weight * term
            logs[f"{prefix}_word"] = term.detach()
        if real_image is not None:
            scores = losses.cosine_scores(d.image_embedding(feats), real_image)
            term = losses.info_nce(scores, cfg.temperature)
            loss = loss + cfg.image_weight * term
            logs[f"{prefix}_img"] = term.detach()
        return loss, logs

    @torch.no_grad()
    def draw(self, z: torch.Tensor, sentence: torch.Tensor, eps: torch.Tensor,
             layout: ObjectMasks | None = None) -> torch.Tensor:
        """One generator pass: (B, 3, S, S) in [-1, 1]; row k depends on row k alone."""
        return self.generator(z, sentence, eps, layout)[0]
