"""`[gan]`: one conditional GAN recipe's networks and losses.

The three GANs of issue 14 share the networks' skeleton and differ in a few switches:
- GAN-INT-CLS (Reed et al. 2016): `matching_aware` and `interpolation` on, no contrastive terms;
- XMC-GAN (Zhang et al. 2021): `modulation` on (self-modulated generator blocks), the three
  contrastive weights set, the matching-aware term off (the paper replaced it with them);
- GauGAN2: `layout` on (SPADE blocks that read a painted layout).
Each switch is what its ablation turns off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from gambar.config import check_range, dataclass_from_dict
from gambar.errors import InvalidInputError

LOSSES = ("hinge", "log")


@dataclass(frozen=True)
class GanConfig:
    image_size: int = 64  # 4 x 2 ** k: the generator starts at 4 x 4 and doubles k times
    z_dim: int = 64
    cond_dim: int = 128  # the text condition's width after conditioning augmentation
    g_channels: int = 256  # the generator's width at 4 x 4; halves each doubling (>= g_min)
    g_min: int = 32
    d_channels: int = 32  # the discriminator's width at full size; doubles each halving
    d_max: int = 256
    embed_dim: int = 128  # the discriminator's shared image/text embedding (contrastive terms)
    modulation: bool = False  # generator norms modulated by [z, text] (XMC-GAN's
                              # self-modulation); off: the text enters with z only (Reed et al.)
    layout: bool = False  # SPADE: every generator block reads the painted layout (GauGAN)
    layout_dim: int = 16  # width of the painted layout's per-object phrase features
    loss: str = "hinge"  # "hinge" (the stabiliser chosen) or "log" (the paper's)
    matching_aware: bool = True  # (real image, mismatched text) is a third, "fake" input to D
    interpolation: float = 1.0  # weight of GAN-INT: G also fools D on text halfway between
                                # two captions (0: off)
    ca_weight: float = 1.0  # KL weight of conditioning augmentation (StackGAN's; 0 with
                            # ca = false)
    ca: bool = True  # sample the condition from N(mu(t), sigma(t)) (conditioning augmentation)
    sentence_weight: float = 0.0  # XMC-GAN's image-sentence contrastive term
    word_weight: float = 0.0  # XMC-GAN's region-word contrastive term
    image_weight: float = 0.0  # XMC-GAN's real-fake image contrastive term
    temperature: float = 0.1  # of the contrastive terms' InfoNCE

    def __post_init__(self) -> None:
        check_range("gan.image_size", self.image_size, 8, 256)
        if self.image_size & (self.image_size - 1):
            raise InvalidInputError(f"gan.image_size must be a power of two (the generator "
                                    f"doubles from 4 x 4), not {self.image_size}")
        for name in ("z_dim", "cond_dim", "embed_dim", "layout_dim"):
            check_range(f"gan.{name}", getattr(self, name), 1, 1024)
        for name in ("g_channels", "g_min", "d_channels", "d_max"):
            check_range(f"gan.{name}", getattr(self, name), 8, 1024)
        if self.loss not in LOSSES:
            raise InvalidInputError(f"gan.loss must be one of {', '.join(LOSSES)}, not "
                                    f"{self.loss!r}")
        for name in ("interpolation", "ca_weight", "sentence_weight", "word_weight",
                     "image_weight"):
            check_range(f"gan.{name}", getattr(self, name), 0.0, 100.0)
        check_range("gan.temperature", self.temperature, 0.0, 10.0, low_open=True)

    @property
    def doublings(self) -> int:
        return self.image_size.bit_length() - 3  # 4 -> image_size

    @property
    def contrastive(self) -> bool:
        return bool(self.sentence_weight or self.word_weight or self.image_weight)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> GanConfig:
        return dataclass_from_dict(cls, data, section="gan")
