"""Text encoders: prompt -> token states, mask and pooled vector (one interface for all)."""

from gambar.text.base import Encoded, TextEncoder

__all__ = ["Encoded", "TextEncoder"]
