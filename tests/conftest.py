import os

import pytest
import torch

import toy_family

# One torch thread per pytest-xdist worker: two workers on two cores, no oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The test-only toy family (tests/toy_family) joins the registry as a plug-in would, so every
# contract check that runs over the registered families covers a family unlike diffusion.
toy_family.register()


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny pipeline directory (config.json + safetensors + tokenizer.json)."""
    path = tmp_path_factory.mktemp("models") / "tiny"
    from helpers_models import make_tiny_pipeline

    make_tiny_pipeline().save(path)
    return path
