"""Outlines of the six shapes, shared by the renderer (data) and the judge (templates).

Each outline is a polygon normalised so that its bounding box is centred on (0, 0) and its larger
side is 1 — the spec measures size as the larger bounding-box side and position by the box centre.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from PIL import Image, ImageDraw

from gambar.data.shapes_vocab import SHAPES

STAR_INNER_RATIO = 0.45  # inner/outer radius of the five-pointed star (spec)
SUPERSAMPLE = 4  # render at 4x and downsample with antialiasing (spec: >= 4x)


def _normalise(points: np.ndarray) -> np.ndarray:
    lo, hi = points.min(axis=0), points.max(axis=0)
    centre, side = (lo + hi) / 2, (hi - lo).max()
    return (points - centre) / side


@cache
def shape_outline(shape: str) -> np.ndarray:
    """(P, 2) polygon in image coordinates (y down), bbox centred at 0, larger side 1."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    if shape == "circle":
        a = np.linspace(0, 2 * np.pi, 256, endpoint=False)
        pts = np.stack([np.cos(a), np.sin(a)], axis=1)
    elif shape == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
    elif shape == "diamond":  # a square rotated 45 degrees: as tall as it is wide
        pts = np.array([[0, -1], [1, 0], [0, 1], [-1, 0]], dtype=float)
    elif shape == "triangle":  # equilateral, pointing up
        pts = np.array([[0, -np.sqrt(3) / 2], [0.5, 0], [-0.5, 0]], dtype=float)
    elif shape == "star":  # five points, one up
        a = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, STAR_INNER_RATIO)
        pts = np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
    else:  # heart: the classic parametric curve, two lobes on top, point down
        t = np.linspace(0, 2 * np.pi, 256, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        pts = np.stack([x, -y], axis=1)
    return _normalise(pts)


def shape_extent(shape: str) -> tuple[float, float]:
    """(width, height) of the shape's bounding box when its larger side is 1."""
    pts = shape_outline(shape)
    w, h = pts.max(axis=0) - pts.min(axis=0)
    return float(w), float(h)


def draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    centre: tuple[float, float],
    size: float,
    fill: tuple[int, ...] | int,
    scale: float = 1.0,
) -> None:
    """Fill `shape` with bbox centre `centre` and larger side `size` (pixels, before `scale`)."""
    pts = shape_outline(shape) * size + np.asarray(centre)
    draw.polygon([(float(x) * scale, float(y) * scale) for x, y in pts], fill=fill)


def shape_mask(shape: str, width: int, height: int) -> np.ndarray:
    """The shape stretched to fill a width x height box: (height, width) float coverage in [0, 1].

    Used as a template by the judge: it stretches each shape to a component's bounding box.
    """
    big = Image.new("L", (width * SUPERSAMPLE, height * SUPERSAMPLE), 0)
    pts = shape_outline(shape)
    w, h = shape_extent(shape)
    norm = (pts - pts.min(axis=0)) / np.array([w, h])  # to the unit square
    poly = [(float(x) * width * SUPERSAMPLE, float(y) * height * SUPERSAMPLE) for x, y in norm]
    ImageDraw.Draw(big).polygon(poly, fill=255)
    small = big.resize((width, height), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0
