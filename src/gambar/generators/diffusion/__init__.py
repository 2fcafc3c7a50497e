"""Pixel-space text-conditional diffusion (Imagen-style, frozen or trainable text encoder)."""
