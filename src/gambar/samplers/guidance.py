"""Denoiser wrappers: classifier-free guidance and dynamic thresholding."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from gambar.samplers.base import Denoiser

Merge = Callable[[Sequence[Any]], Any]


def merge_conds(parts: Sequence[Any]) -> Any:
    """Concatenate conditionings along the batch: tensors, or objects of one type with a `cat`
    classmethod (text.Encoded pads its length); samplers know no conditioning type by name."""
    kind = type(parts[0])
    if all(type(p) is kind for p in parts) and callable(getattr(kind, "cat", None)):
        return kind.cat(parts)
    if all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat(list(parts))
    kinds = ", ".join(sorted({type(p).__name__ for p in parts}))
    raise TypeError(f"cannot batch conditionings of type {kinds}; pass merge= to classifier_free")


def classifier_free(denoise: Denoiser, scale: float, merge: Merge = merge_conds) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans 2022): u + scale (c - u) on the x0 prediction.

    The wrapped denoiser's cond is a pair (cond, uncond). For a negative prompt, pass its
    encoding as uncond: guidance then pushes away from it; samplers need nothing special.
    Guiding x0 is the same as guiding eps or v: at fixed (x_t, t) each is an affine function
    of the others with the same coefficients for both branches, so the combination commutes.
    """

    def guided(x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        c, u = cond
        if scale == 1:
            return denoise(x, t, c)  # u + 1 (c - u) = c: skip the unconditional pass
        # One call on a doubled batch: better throughput than two calls of B.
        out = denoise(torch.cat([x, x]), torch.cat([t, t]), merge([c, u]))
        out_c, out_u = out.chunk(2)
        return out_u + scale * (out_c - out_u)

    return guided


def dynamic_threshold(denoise: Denoiser, percentile: float = 0.995) -> Denoiser:
    """Dynamic thresholding (Saharia et al. 2022, sec. 2.3): clamp x0 to [-s, s] and divide by
    s, s = max(1, the percentile of |x0| per image); keeps high-guidance samples in [-1, 1]."""
    if not 0 < percentile <= 1:
        raise ValueError(f"percentile must be in (0, 1], got {percentile}")

    def thresholded(x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        x0 = denoise(x, t, cond)
        flat = x0.reshape(x0.shape[0], -1).abs()  # (B, C*H*W)
        # quantile needs float32/64; half inputs are upcast for it only.
        s = torch.quantile(flat.float(), percentile, dim=1).clamp(min=1).to(x0.dtype)
        s = s.reshape(-1, *([1] * (x0.ndim - 1)))
        return torch.maximum(torch.minimum(x0, s), -s) / s

    return thresholded
