"""The diffusion family through the real `gambar train` command: train, resume, load, draw."""

import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

import gambar
from gambar.cli import main
from gambar.errors import InvalidInputError

RECIPE = str(Path(__file__).parents[1] / "configs" / "tiny.toml")


def train(run_dir, steps, *extra):
    return main(["train", RECIPE, "-q", "--set", f"train.steps={steps}",
                 "--set", f"train.run_dir={run_dir}", "--set", "train.checkpoint_every=2",
                 *extra])


@pytest.mark.slow
def test_train_resume_equals_uninterrupted_and_model_draws(tmp_path, capsys):
    assert train(tmp_path / "a", 4) == 0
    assert train(tmp_path / "b", 2) == 0
    assert train(tmp_path / "b", 4, "--resume") == 0
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k].numpy(), b[k].numpy()), k
    pipe = gambar.load(tmp_path / "a")  # a run directory resolves to its exported model
    (img,) = pipe.generate(["sebuah lingkaran merah"], seeds=[1], steps=3, progress=False)
    assert img.image.size == (32, 32)
    assert img.provenance["text_encoder"]["name"] == "small-transformer"


def test_train_errors_are_one_line(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.toml")]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text('family = "diffusion"\n[unet]\npreset = "unet-xxl"\n'
                   f'[train]\nrun_dir = "{tmp_path / "r"}"\n')
    assert main(["train", str(bad), "-q"]) == 2
    assert main(["train", RECIPE, "--set", "train.lrr=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "unet-xxl" in err[1] and "lrr" in err[2]


def test_a_data_mix_trains_on_emoji_and_shapes(tmp_path):
    """`[data] mix`: batches interleave the shapes stream with emoji by weight, and train."""
    import torch

    from gambar.config import load_recipe
    from gambar.generators.diffusion.training import DiffusionTask

    recipe = load_recipe(RECIPE)
    recipe["data"]["mix"] = {"shapes": 1, "emoji": 1}
    task = DiffusionTask(recipe)
    batch = next(task.batches(0, 0, 1, 8))
    shapes = task.stream.take(0, 4)
    assert batch["captions"][0::2] == [s.caption for s in shapes]
    assert task.mix is not None and all(task.mix[i][2]["source"] == "emoji" for i in (1, 3, 5))
    assert batch["images"].shape[0] == 8 and task.data_summary["mix"] == {"shapes": 1, "emoji": 1}
    loss = task.loss(task.model, batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)


SHIPPED = ["tiny.toml", "default.toml", "default-stage2.toml", "ablation/encoder-frozen.toml",
           "ablation/encoder-small.toml"]


def _check_recipe(text: str) -> None:
    """What `gambar train` checks of a diffusion recipe before training: every section and key
    (the task's reader), [data] and [train]; no data drawn, no encoder built."""
    import tomllib

    from gambar.data.mix import recipe_data
    from gambar.generators.diffusion.training import read_recipe
    from gambar.train.recipe import train_config

    recipe = tomllib.loads(text)
    sections = read_recipe(recipe)
    recipe_data(recipe.get("data", {}), default_size=sections.diffusion.image_size)
    assert train_config(recipe).run_dir.startswith("runs/")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_diffusion_recipes_parse(name):
    """Every shipped diffusion recipe names known sections, keys and presets, and the same
    check refuses each of them with a section misspelt (`[unte]` used to be ignored)."""
    text = (Path(__file__).parents[1] / "configs" / name).read_text()
    _check_recipe(text)
    for section, typo in [("unet", "unte"), ("train", "trian"), ("diffusion", "difusion"),
                          ("text", "txt")]:
        with pytest.raises(InvalidInputError, match=rf"unknown recipe section \[{typo}\]"):
            _check_recipe(text.replace(f"[{section}]", f"[{typo}]"))


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.lr=1e30"], r"train.lr must be in \(0, 1\], got 1e\+30"),
    (["diffusion.caption_dropout=2.0"], r"caption_dropout must be in \[0, 1\)"),
    (["diffusion.image_size=64"], "data.size = 32 and diffusion.image_size = 64 disagree"),
    (["unet.text_dim=8"], "unet.text_dim is set by the text encoder"),
    (["unet.heads=[]"], "'unet.heads' expects int"),
    (["sample.seed=-1"], "sample.seed must be >= 0"),
    (["sample.prompts=[]"], "sample.prompts is empty"),
    (["train.betas=[0.9, 1.5]"], r"train.betas\[1\] must be in \[0, 1\)"),
    # each of these used to train into a traceback (or a model load() refused)
    (["data.size=30"], r"data.size = 30 does not fit the UNet's downsampling .* multiple of 4, "
                       "such as 28, 32$"),
    (["data.size=36", "unet.patch_size=4"], r"multiple of 8, such as 32, 40$"),
    (["data.size=288"], "data.size = 288 is larger than 256, the largest size a diffusion model "
                        "samples at"),
    (["unet.image_channels=4"], r"unet.image_channels must be 3 \(RGB images\), not 4"),
])
def test_recipe_mistakes_are_one_line_errors_before_training(tmp_path, capsys, monkeypatch,
                                                            overrides, message):
    monkeypatch.chdir(tmp_path)  # where a recipe mistake used to train into runs/gambar
    sets = [a for o in overrides for a in ("--set", o)]
    assert main(["train", RECIPE, "-q", "--set", f"train.run_dir={tmp_path / 'r'}", *sets]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and re.search(message, err[0]), err
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing written


def test_a_size_from_diffusion_image_size_alone_is_checked_too():
    from gambar.generators.diffusion.training import read_recipe

    with pytest.raises(InvalidInputError, match="diffusion.image_size = 300 is larger than 256"):
        read_recipe({"diffusion": {"image_size": 300}})
    with pytest.raises(InvalidInputError, match="diffusion.image_size = 66 does not fit"):
        read_recipe({"diffusion": {"image_size": 66}, "unet": {"preset": "unet-tiny"}})
    assert read_recipe({"diffusion": {"image_size": 256}}).diffusion.image_size == 256


@pytest.mark.parametrize(("edit", "message"), [
    (("[train]", "[trian]"), r"unknown recipe section \[trian\]; did you mean \[train\]"),
    (("[unet]", "[unte]"), r"unknown recipe section \[unte\]; did you mean \[unet\]"),
    (("dim = 64", "dimm = 64"), "unknown key 'text.dimm'"),
    (("dim = 64", 'dim = "64"'), "'text.dim' expects int, got '64'"),
    (('kind = "small"', 'kind = "big"'), "text.kind must be one of minilm, small"),
    (('name = "tiny"', 'name = "tiny"\nseed = 1'), "unknown recipe key 'seed'"),
])
def test_recipe_file_mistakes_are_one_line_errors(tmp_path, capsys, monkeypatch, edit, message):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(Path(RECIPE).read_text().replace(*edit, 1))
    assert main(["train", str(recipe), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert [p.name for p in tmp_path.iterdir()] == ["recipe.toml"]


def test_default_stage2_continues_stage1():
    """Stage 2 resumes stage 1's run: same network, encoder, image size and run directory, and
    more steps (a resume refuses fewer)."""
    from gambar.config import load_recipe
    from gambar.data.mix import recipe_data

    configs = Path(__file__).parents[1] / "configs"
    one, two = load_recipe(configs / "default.toml"), load_recipe(configs / "default-stage2.toml")
    assert one["unet"] == two["unet"] and one["text"] == two["text"]
    assert one["train"]["run_dir"] == two["train"]["run_dir"]
    assert two["train"]["steps"] > one["train"]["steps"]
    assert recipe_data(one["data"], 64).stream.size == recipe_data(two["data"], 64).stream.size
