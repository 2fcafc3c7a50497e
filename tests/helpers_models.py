"""Tiny models for tests: built in code, seconds to run."""

import torch


def make_tiny_pipeline(text_kind: str = "small"):
    """A randomly initialised, seconds-fast diffusion pipeline (unet-tiny, 32 px)."""
    from dataclasses import replace

    from gambar.generators.diffusion.config import DiffusionConfig
    from gambar.generators.diffusion.model import DiffusionModel
    from gambar.generators.diffusion.pipeline import DiffusionPipeline
    from gambar.generators.diffusion.unet import PRESETS
    from gambar.text.setup import TextSetup

    captions = ["a red circle", "three blue stars", "sebuah lingkaran merah", "dua bintang biru"]
    text = (TextSetup.build("small", captions, dim=32, depth=1, heads=2, vocab_size=100)
            if text_kind == "small" else TextSetup.build("minilm"))
    torch.manual_seed(0)
    model = DiffusionModel(replace(PRESETS["unet-tiny"], text_dim=text.dim), text.trainable)
    # Zero-initialised output layers would make every image identical; perturb them.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return DiffusionPipeline(model, text, DiffusionConfig(image_size=32), name="tiny-test")


def tiny_diffusion(captions, size: int = 32, base_channels: int = 16):
    """An untrained tiny pipeline whose small text encoder learned `captions`' tokens."""
    from dataclasses import replace

    from gambar.generators.diffusion.config import DiffusionConfig
    from gambar.generators.diffusion.model import DiffusionModel
    from gambar.generators.diffusion.pipeline import DiffusionPipeline
    from gambar.generators.diffusion.unet import PRESETS
    from gambar.text.setup import TextSetup

    torch.manual_seed(0)
    text = TextSetup.build("small", captions, dim=32, depth=1, heads=2, vocab_size=100)
    unet = replace(PRESETS["unet-tiny"], text_dim=text.dim, base_channels=base_channels)
    model = DiffusionModel(unet, text.trainable)
    return DiffusionPipeline(model, text, DiffusionConfig(image_size=size, caption_dropout=0.0),
                             name="tiny-overfit")
