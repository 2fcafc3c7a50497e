"""Evaluation: the compositional shapes judge (exact ground truth), and image-quality metrics."""

from gambar.evaluation.compositional import (
    DetectedObject,
    Judgement,
    detect_objects,
    is_held_out,
    judge,
    score,
)

__all__ = ["DetectedObject", "Judgement", "detect_objects", "is_held_out", "judge", "score"]
