"""Training: one shared loop (accelerate), EMA, atomic resumable checkpoints."""
