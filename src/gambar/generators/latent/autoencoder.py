"""The KL autoencoder of latent diffusion (Rombach et al. 2022, Stable Diffusion): images to a
small latent grid and back, so the diffusion UNet works on f x f fewer positions.

The network is diffusers' `AutoencoderKL` (the field's reference implementation, built here
from a small config and trained by gambar's recipe): no reason to write it again. What gambar
adds is the loss for its flat-coloured data (L1 plus an L1 on neighbouring-pixel differences,
which keeps edges sharp without a perceptual network or a discriminator, neither of which can
be downloaded here), a tiny KL weight as in SD, and the latent scale factor measured on the
training data (SD's 0.18215 was measured the same way: 1 / std of the latents).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import gambar
from gambar.config import check_range, dataclass_from_dict
from gambar.errors import InvalidInputError
from gambar.model_dir import config_error, load_components, open_model_dir, save_model_dir

FAMILY = "autoencoder"
EXTRAS = ("name", "training", "data")  # optional config.json entries kept through a re-save


@dataclass(frozen=True)
class AutoencoderConfig:
    """`[autoencoder]`: the network's widths per level (f = 2 ** (levels - 1)) and the loss."""

    channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    latent_channels: int = 4
    groups: int = 16  # GroupNorm groups; must divide every width
    kl_weight: float = 1e-6
    edge_weight: float = 1.0
    crop: int = 0  # train on random crops of this side (0: whole images); see random_crops
    scale: float = 1.0  # latents are multiplied by this before diffusion; set at export

    def __post_init__(self) -> None:
        if not 2 <= len(self.channels) <= 4:
            raise InvalidInputError(
                f"autoencoder.channels must list 2 to 4 levels (f = 2 to 8), not "
                f"{list(self.channels)}")
        for i, width in enumerate(self.channels):
            check_range(f"autoencoder.channels[{i}]", width, 4, 512)
            if width % self.groups:
                raise InvalidInputError(f"autoencoder.groups={self.groups} must divide "
                                        f"autoencoder.channels[{i}]={width}")
        check_range("autoencoder.layers_per_block", self.layers_per_block, 1, 4)
        check_range("autoencoder.latent_channels", self.latent_channels, 1, 16)
        check_range("autoencoder.groups", self.groups, 1, 32)
        check_range("autoencoder.kl_weight", self.kl_weight, 0.0, 1.0)
        check_range("autoencoder.edge_weight", self.edge_weight, 0.0, 100.0)
        check_range("autoencoder.crop", self.crop, 0, 1024)
        if self.crop % self.factor:
            raise InvalidInputError(f"autoencoder.crop={self.crop} must be a multiple of the "
                                    f"autoencoder's factor {self.factor}")
        check_range("autoencoder.scale", self.scale, 0.0, 1e4, low_open=True)

    @property
    def factor(self) -> int:
        """How many pixels one latent position spans, per side."""
        return 2 ** (len(self.channels) - 1)


def build_network(cfg: AutoencoderConfig) -> nn.Module:
    from diffusers import AutoencoderKL

    levels = len(cfg.channels)
    return AutoencoderKL(in_channels=3, out_channels=3,
                         down_block_types=("DownEncoderBlock2D",) * levels,
                         up_block_types=("UpDecoderBlock2D",) * levels,
                         block_out_channels=tuple(cfg.channels),
                         layers_per_block=cfg.layers_per_block,
                         latent_channels=cfg.latent_channels, norm_num_groups=cfg.groups)


def random_crops(images: torch.Tensor, side: int, generator: torch.Generator) -> torch.Tensor:
    """A random side x side crop of each image (the whole batch when side is 0 or too large).

    The network is convolutional (one attention block, at the lowest level), so it learns the
    same local reconstruction from crops: 64 px crops of 128 px images train about 7x faster
    per step on a CPU (measured), as SD trained its autoencoder on 256 px crops.
    """
    n, _, height, width = images.shape
    if not side or side >= min(height, width):
        return images
    ys = torch.randint(0, height - side + 1, (n,), generator=generator).tolist()
    xs = torch.randint(0, width - side + 1, (n,), generator=generator).tolist()
    return torch.stack([im[:, y:y + side, x:x + side] for im, y, x in zip(images, ys, xs,
                                                                           strict=True)])


def edge_l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L1 between the neighbouring-pixel differences of x and y (blurred edges cost)."""
    return ((x.diff(dim=-1) - y.diff(dim=-1)).abs().mean()
            + (x.diff(dim=-2) - y.diff(dim=-2)).abs().mean())


class Autoencoder(nn.Module):
    """encode(images in [-1, 1]) -> scaled latents; decode(scaled latents) -> images."""

    def __init__(self, cfg: AutoencoderConfig, extra: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = build_network(cfg)
        self.extra = dict(extra or {})  # name, training summary, data: carried through saves
        self.sha256 = ""

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, H / f, W / f) scaled latents: the posterior's mean, or a draw
        from it with `generator` (training)."""
        dist = self.net.encode(images).latent_dist
        z = dist.mean if generator is None else dist.mean + dist.std * torch.randn(
            dist.mean.shape, generator=generator, dtype=dist.mean.dtype)
        return z * self.cfg.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.net.decode(latents / self.cfg.scale).sample

    def loss(self, images: torch.Tensor, generator: torch.Generator
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Reconstruction (L1 + edge L1) + KL to N(0, I) on random crops of `images` (when
        cfg.crop is set), with their parts for the log."""
        images = random_crops(images, self.cfg.crop, generator)
        dist = self.net.encode(images).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=generator,
                                               dtype=dist.mean.dtype)
        recon = self.net.decode(z).sample
        l1 = (recon - images).abs().mean()
        edges = edge_l1(recon, images)
        kl = 0.5 * (dist.mean.square() + dist.var - 1 - dist.logvar).sum(dim=(1, 2, 3)).mean()
        total = l1 + self.cfg.edge_weight * edges + self.cfg.kl_weight * kl
        return total, {"l1": l1.detach(), "edges": edges.detach(), "kl": kl.detach()}

    def forward(self, images: torch.Tensor, generator: torch.Generator
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss (through forward, so a distributed wrapper syncs its gradients)."""
        return self.loss(images, generator)

    @torch.no_grad()
    def measured_scale(self, images: torch.Tensor) -> float:
        """1 / std of the unscaled latent means of `images` (so diffused latents have unit
        variance, which the noise schedule assumes)."""
        z = self.net.encode(images).latent_dist.mean
        return float(1.0 / z.float().std().clamp(min=1e-6))

    # ---- saving and loading -------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return {"family": FAMILY, "gambar_version": gambar.__version__,
                "autoencoder": asdict(self.cfg), **self.extra}

    def save(self, path: Path, *, dtype: torch.dtype = torch.float32) -> None:
        self.sha256 = save_model_dir(Path(path), {"model": self.net}, self.config_dict(),
                                     dtype=dtype)

    @staticmethod
    def from_config(section: Any, path: Path) -> Autoencoder:
        try:
            cfg = dataclass_from_dict(AutoencoderConfig, section, section="autoencoder")
        except (InvalidInputError, KeyError, TypeError, ValueError) as exc:
            raise config_error(path, "autoencoder", exc) from None
        return Autoencoder(cfg)

    @classmethod
    def load(cls, path: Path) -> Autoencoder:
        path = Path(path)
        cfg, sha256 = open_model_dir(path, FAMILY)
        model = cls.from_config(cfg.get("autoencoder"), path)
        model.extra = {k: cfg[k] for k in EXTRAS if isinstance(cfg.get(k), dict | str)}
        load_components(path, {"model": model.net}, config=cfg)
        model.sha256 = sha256
        return model.eval()

    def with_scale(self, scale: float) -> Autoencoder:
        """This network with the latent scale factor set (the weights are shared)."""
        if not math.isfinite(scale) or scale <= 0:
            raise InvalidInputError(f"a latent scale must be a positive number, not {scale}")
        other = Autoencoder.__new__(Autoencoder)
        nn.Module.__init__(other)
        other.cfg, other.net = replace(self.cfg, scale=scale), self.net
        other.extra = dict(self.extra)
        return other


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = F.mse_loss(x.clamp(-1, 1).float(), y.float()).item()
    return 10 * math.log10(4.0 / max(mse, 1e-12))
