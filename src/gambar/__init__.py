"""gambar: text-to-image models that train, sample, evaluate and serve offline on a CPU."""

from gambar.pipeline import Generated, Pipeline, load

__version__ = "0.1.0"
__all__ = ["Generated", "Pipeline", "load", "__version__"]
