"""scripts/ship_model.py: a trained model becomes a built-in one, fp16, card kept, same images."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors import safe_open

import gambar
from gambar.model_dir import verify_model_dir

SCRIPT = Path(__file__).parents[1] / "scripts" / "ship_model.py"


def test_ship_model_stores_fp16_keeps_the_card_and_draws_alike(tiny_model_dir, tmp_path):
    dest = tmp_path / "weights" / "tiny"
    dest.mkdir(parents=True)
    (dest / "README.md").write_text("# model card\n")
    (dest / "stale.bin").write_text("from the old model")
    done = subprocess.run([sys.executable, str(SCRIPT), str(tiny_model_dir), str(dest)],
                          capture_output=True, text=True, check=True)
    assert "fp16" in done.stdout
    assert (dest / "README.md").read_text() == "# model card\n"
    assert not (dest / "stale.bin").exists()  # the old directory is replaced whole
    with safe_open(str(dest / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}
    assert verify_model_dir(dest) == gambar.load(dest).sha256  # SHA256SUMS written and right
    a = gambar.load(tiny_model_dir).generate(["a red circle"], seeds=[3], steps=4, progress=False)
    b = gambar.load(dest).generate(["a red circle"], seeds=[3], steps=4, progress=False)
    diff = np.abs(np.asarray(a[0].image, int) - np.asarray(b[0].image, int))
    assert diff.mean() < 2  # fp16 storage rounds weights, it does not change the model


def test_ship_model_stores_measured_sampling_defaults(tiny_model_dir, tmp_path):
    """`--default steps=3`: the shipped model samples with 3 steps unless told otherwise, says so
    in provenance, and a wrong key is a one-line usage error that writes nothing."""
    dest = tmp_path / "tiny"
    subprocess.run([sys.executable, str(SCRIPT), str(tiny_model_dir), str(dest),
                    "--default", "steps=3", "--default", "guidance=1.5"],
                   capture_output=True, text=True, check=True)
    pipe = gambar.load(dest)
    assert pipe.default_options.steps == 3 and pipe.default_options.guidance == 1.5
    (img,) = pipe.generate(["a red circle"], seeds=[0], progress=False)
    assert img.provenance["steps"] == 3 and img.provenance["guidance"] == 1.5
    assert gambar.load(tiny_model_dir).default_options.steps != 3

    bad = subprocess.run([sys.executable, str(SCRIPT), str(tiny_model_dir), str(tmp_path / "b"),
                          "--default", "stepz=3"], capture_output=True, text=True)
    assert bad.returncode == 2 and "stepz" in bad.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "b").exists()


def test_ship_model_refuses_a_default_the_model_could_not_load(tiny_model_dir, tmp_path):
    """`--default steps=many` would ship a model no one can load: one line, old model kept."""
    dest = tmp_path / "tiny"
    dest.mkdir()
    (dest / "README.md").write_text("# the old model\n")
    for value in ("steps=many", "steps=0", "sampler=plms"):
        bad = subprocess.run([sys.executable, str(SCRIPT), str(tiny_model_dir), str(dest),
                              "--default", value], capture_output=True, text=True)
        err = bad.stderr.strip()
        assert bad.returncode == 2 and "\n" not in err and "Traceback" not in err, err
        assert err.startswith("error:") and value.split("=")[0] in err
        assert [p.name for p in dest.iterdir()] == ["README.md"]
