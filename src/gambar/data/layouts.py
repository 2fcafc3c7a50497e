"""(caption, layout) pairs from the training data: which words of a caption ground which box.

The layout stage of the grounded family learns from these. The shapes stream knows its boxes and
the span of every object's phrase exactly; an emoji or a glyph is one object, its box the ink's
bounding box and its phrase the whole caption. Objects come in the order their phrases appear
(then left to right, top to bottom), the order the layout stage writes them in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from gambar.data.shapes_vocab import INK_THRESHOLD


@dataclass(frozen=True)
class GroundedObject:
    """One object of a training layout: the caption's characters [start, end) that name it, and
    its box (x0, y0, x1, y1) in fractions of the image side."""

    span: tuple[int, int]
    box: tuple[float, float, float, float]


def ink_mask(image: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: the inked (non-white) pixels of an image (3, H, W) in [-1, 1]."""
    return (image.amin(dim=0) + 1) * 127.5 < INK_THRESHOLD  # darkest channel, 0..255


def ink_box(image: torch.Tensor) -> tuple[float, float, float, float]:
    """Bounding box of the non-white pixels of an image (3, H, W) in [-1, 1], as fractions; the
    whole image when nothing is inked."""
    ink = ink_mask(image)
    h, w = ink.shape
    rows, cols = ink.any(dim=1).nonzero(), ink.any(dim=0).nonzero()
    if len(rows) == 0:
        return (0.0, 0.0, 1.0, 1.0)
    return (cols[0].item() / w, rows[0].item() / h, (cols[-1].item() + 1) / w,
            (rows[-1].item() + 1) / h)


def training_layout(image: torch.Tensor, caption: str, labels: Mapping[str, Any]
                    ) -> tuple[GroundedObject, ...]:
    """The layout of one training item (shapes: exact; anything else: one object)."""
    spans, boxes = labels.get("spans"), labels.get("boxes")
    if spans and boxes and len(spans) == len(boxes):
        side = float(labels.get("image_size") or image.shape[-1])
        objects = [
            GroundedObject((int(s[0]), int(s[1])),
                           tuple(min(max(v / side, 0.0), 1.0) for v in box))  # type: ignore[misc]
            for s, box in zip(spans, boxes, strict=True)
        ]
    else:
        objects = [GroundedObject((0, len(caption)), ink_box(image))]
    return tuple(sorted(objects, key=lambda o: (o.span[0], o.box[0], o.box[1])))
