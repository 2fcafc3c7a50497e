"""Realism: FID (Heusel et al. 2017) and KID (Bińkowski et al. 2018) in gambar's own features.

torchmetrics computes both; the features come from gambar's contrastive image tower instead of
Inception-v3, whose weights cannot be downloaded here (and torch-fidelity, which loads them, pulls
in torchvision, which breaks this torch). Figures are therefore comparable across gambar models
evaluated with the same contrastive model (its sha256 is recorded), never with papers' Inception
FID. Features from a CLIP-like network also track human judgement better than Inception's on
non-ImageNet data (Kynkäänniemi et al. 2023).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch import nn

from gambar.contrastive.model import ContrastiveModel, ImageTower
from gambar.errors import InvalidInputError

KID_SUBSETS = 100  # torchmetrics' and Bińkowski et al.'s default number of subsets
KID_SUBSET_SIZE = 1000  # Bińkowski et al.'s subset size, capped at half the smaller set
FEATURE_BATCH = 64


class TowerFeatures(nn.Module):
    """torchmetrics feature extractor: images (B, 3, H, W) -> tower features (B, num_features).

    Accepts what torchmetrics passes on: uint8 in 0..255 (its default, `normalize=False`) or float
    in [0, 1]. Always in eval mode and without gradients, like torchmetrics' own Inception.
    """

    def __init__(self, tower: ImageTower) -> None:
        super().__init__()
        self.tower = tower.eval()
        self.num_features = tower.cfg.width  # read by torchmetrics to size its statistics

    def train(self, mode: bool = True) -> TowerFeatures:
        """Stay in eval mode: torchmetrics may call .train() on its children."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) uint8 or [0, 1] float -> (B, num_features) float64."""
        x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float() * 2.0 - 1.0
        features = torch.cat([self.tower(x[i:i + FEATURE_BATCH])
                              for i in range(0, len(x), FEATURE_BATCH)])
        # double: torchmetrics casts its result to the features' dtype, and float32 would round
        # FID of near-identical sets to noise
        return features.double()


def feature_extractor(model: ContrastiveModel | ImageTower) -> TowerFeatures:
    """The torchmetrics feature extractor of a contrastive model (or a bare image tower)."""
    tower = model.net.image if isinstance(model, ContrastiveModel) else model
    return TowerFeatures(tower)


def to_uint8(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL images of one size -> (B, 3, H, W) uint8, the input torchmetrics expects."""
    if not images:
        raise InvalidInputError("no images given")
    sizes = {im.size for im in images}
    if len(sizes) > 1:
        raise InvalidInputError(f"images must share one size, got {sorted(sizes)}")
    arrays = [torch.frombuffer(bytearray(im.convert("RGB").tobytes()), dtype=torch.uint8)
              for im in images]
    w, h = images[0].size
    return torch.stack(arrays).reshape(len(images), h, w, 3).permute(0, 3, 1, 2).contiguous()


def fid_kid(real: Sequence[Image.Image] | torch.Tensor, fake: Sequence[Image.Image] | torch.Tensor,
            extractor: nn.Module, *, kid: bool = True, seed: int = 0) -> dict[str, Any]:
    """FID and KID between two image sets through `extractor` (a module with num_features).

    real, fake: PIL images or (B, 3, H, W) uint8 tensors. KID's random subsets are drawn from
    `seed` on a forked RNG, so the result is deterministic and the caller's RNG is untouched.
    Returns {"fid", "kid_mean", "kid_std", "n_real", "n_fake", "kid_subset_size"}.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    real_t = real if isinstance(real, torch.Tensor) else to_uint8(real)
    fake_t = fake if isinstance(fake, torch.Tensor) else to_uint8(fake)
    if min(len(real_t), len(fake_t)) < 2:
        raise InvalidInputError("FID needs at least two images in each set")
    fid = FrechetInceptionDistance(feature=extractor, normalize=False)
    fid.update(real_t, real=True)
    fid.update(fake_t, real=False)
    out: dict[str, Any] = {"fid": _clean(float(fid.compute())), "n_real": len(real_t),
                           "n_fake": len(fake_t)}
    if kid:
        # Subsets of half the smaller set (up to 1000): subsets of the whole set would all be the
        # same set reordered, and KID's standard deviation over subsets would say nothing.
        size = max(2, min(KID_SUBSET_SIZE, len(real_t) // 2, len(fake_t) // 2))
        with warnings.catch_warnings():  # "will save all extracted features": we know, it is small
            warnings.simplefilter("ignore", UserWarning)
            metric = KernelInceptionDistance(feature=extractor, subsets=KID_SUBSETS,
                                             subset_size=size)
        metric.update(real_t, real=True)
        metric.update(fake_t, real=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # torchmetrics draws KID subsets from the global RNG
            mean, std = metric.compute()
        out.update(kid_mean=float(mean), kid_std=float(std), kid_subset_size=size)
    return out


def _clean(value: float) -> float:
    """FID is a squared distance: the matrix square root's rounding can push a set compared
    with itself a hair below zero."""
    return max(value, 0.0)
