"""A layout as a GauGAN-style GAN reads it: one mask per object and the phrase that names it,
painted into a map (where any object is, then each object's projected phrase inside its mask)
that the generator's SPADE norms and the discriminator's input read.

Training masks are the objects' exact silhouettes (a shape's ink inside its box; an emoji's or a
glyph's ink), or, for a share of the items, their boxes: at generation a layout is boxes (the
user's `--layout`, or the layout stage's), and the model has seen both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gambar.config import check_range
from gambar.data.layouts import ink_mask, training_layout
from gambar.generators.grounded.grounding import box_masks
from gambar.inputs import Layout

BOX_STREAM = 0x4258  # "BX": the per-item draw of box or silhouette never reuses another stream


@dataclass(frozen=True)
class LayoutRecipe:
    """`[layout]` of a GauGAN recipe: the layout stage to carry, and how often a training item's
    objects are painted as boxes instead of silhouettes."""

    planner: str = ""  # a grounded model (e.g. "default") whose layout stage the GAN carries
    box_fraction: float = 0.5

    def __post_init__(self) -> None:
        check_range("layout.box_fraction", self.box_fraction, 0.0, 1.0)


@dataclass
class ObjectMasks:
    """A batch of layouts: masks (B, K, S, S) in {0, 1}, phrase vectors (B, K, P), and which of
    the K slots hold an object (B, K) bool."""

    masks: torch.Tensor
    phrases: torch.Tensor
    valid: torch.Tensor

    @staticmethod
    def build(layouts: Sequence[Sequence[tuple[torch.Tensor, torch.Tensor]]], size: int,
              dim: int) -> ObjectMasks:
        """From per-image lists of (mask (S, S), phrase vector (P,))."""
        k = max((len(lay) for lay in layouts), default=0)
        masks = torch.zeros(len(layouts), k, size, size)
        phrases = torch.zeros(len(layouts), k, dim)
        valid = torch.zeros(len(layouts), k, dtype=torch.bool)
        for i, lay in enumerate(layouts):
            for j, (mask, phrase) in enumerate(lay):
                masks[i, j], phrases[i, j], valid[i, j] = mask, phrase, True
        return ObjectMasks(masks, phrases, valid)

    def to(self, device: torch.device) -> ObjectMasks:
        return ObjectMasks(self.masks.to(device), self.phrases.to(device), self.valid.to(device))


class Painter(nn.Module):
    """ObjectMasks -> (B, 1 + dim, S, S): an occupancy channel, then the sum over objects of
    each one's projected phrase vector inside its mask."""

    def __init__(self, phrase_dim: int, dim: int) -> None:
        super().__init__()
        self.project = nn.Linear(phrase_dim, dim)

    def forward(self, objects: ObjectMasks) -> torch.Tensor:
        masks = objects.masks * objects.valid[..., None, None].to(objects.masks.dtype)
        occupancy = masks.sum(dim=1, keepdim=True).clamp(max=1.0)
        feats = torch.einsum("bkhw,bkd->bdhw", masks,
                             self.project(objects.phrases).to(masks.dtype))
        return torch.cat([occupancy, feats], dim=1)


def box_mask(box: Sequence[float], size: int) -> torch.Tensor:
    """(S, S) 1 where a pixel's centre lies inside box (x0, y0, x1, y1), fractions of the side:
    the grounded family's rule, so a layout covers the same pixels in both families."""
    return box_masks(torch.tensor([[box]], dtype=torch.float32),
                     torch.ones(1, 1, dtype=torch.bool), size)[0, 0]


def item_objects(image: torch.Tensor, caption: str, labels: Mapping[str, Any], boxes: bool
                 ) -> list[tuple[torch.Tensor, str]]:
    """(mask, phrase) of each object of a training item: its box, or its ink inside the box."""
    size = image.shape[-1]
    ink = ink_mask(image).float()
    out = []
    for obj in training_layout(image, caption, labels):
        mask = box_mask(obj.box, size)
        if not boxes and bool((mask * ink).any()):
            mask = mask * ink
        out.append((mask, caption[obj.span[0]:obj.span[1]]))
    return out


def layout_objects(layout: Layout, size: int) -> list[tuple[torch.Tensor, str]]:
    """(box mask, phrase) of each object of a given or sampled layout."""
    return [(box_mask((b.x0, b.y0, b.x1, b.y1), size), b.phrase) for b in layout.objects]
