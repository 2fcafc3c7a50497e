"""Datasets: procedural shapes (exact ground truth), emoji and glyphs built from packages, and
loaders for the standard formats (imagefolder, COCO, CUB/Flowers, webdataset)."""

from gambar.data.loading import load_dataset

__all__ = ["load_dataset"]
