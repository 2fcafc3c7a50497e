"""Datasets: procedural shapes (exact ground truth), and loaders for standard formats."""
