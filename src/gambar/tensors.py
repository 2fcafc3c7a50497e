"""Images as model tensors: the one pixel convention (RGB, (3, H, W), float32 in [-1, 1]) that
datasets, evaluators and generators share. Kept apart from any dataset so that a model can take
images without importing one."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [-1, 1]."""
    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32).copy())
    return x.permute(2, 0, 1) / 127.5 - 1.0


def to_image(x: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] -> 8-bit RGB PIL image (clamped, rounded): what a generator draws."""
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr, "RGB")
