"""The contrastive (CLIP-like) model: loss, towers, save/load, and overfitting through the loop."""

import json
import math
from pathlib import Path

import pytest
import torch

from gambar.cli import main
from gambar.config import load_recipe
from gambar.contrastive import (
    PRESETS,
    ContrastiveConfig,
    ContrastiveModel,
    ContrastiveNet,
    contrastive_loss,
    load_contrastive,
)
from gambar.contrastive.task import ContrastiveTask, _model_config, scene_key
from gambar.data.prompts import parse_prompt
from gambar.data.shapes import fixed_split
from gambar.errors import CorruptFileError, InvalidInputError
from gambar.text.setup import TextSetup
from gambar.train.recipe import train_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

CAPTIONS = ["a red circle", "three blue stars", "sebuah lingkaran merah", "dua bintang biru",
            "a green square to the left of a purple heart"]


def tiny_model(name="tiny-clip"):
    torch.manual_seed(0)
    text = TextSetup.build("small", CAPTIONS, dim=32, depth=1, heads=2, vocab_size=100)
    net = ContrastiveNet(PRESETS["clip-tiny"], text.dim, text.trainable)
    return ContrastiveModel(net, text, name=name)


def overfit_recipe(run_dir, steps=100):
    return {
        "family": "contrastive", "name": "overfit",
        "data": {"size": 32, "limit": 8, "languages": ["en", "id"]},
        "text": {"kind": "small", "dim": 32, "depth": 1, "heads": 2, "vocab_size": 200},
        "model": {"preset": "clip-tiny"},
        "train": {"steps": steps, "batch_size": 8, "lr": 3e-3, "warmup_steps": 5,
                  "ema_decay": 0.0, "checkpoint_every": 1000, "sample_every": 0,
                  "log_every": 10, "run_dir": str(run_dir)},
    }


# ---------------------------------------------------------------------------------------------
# Loss


def test_loss_of_uninformative_logits_is_log_batch():
    assert contrastive_loss(torch.zeros(6, 6)).item() == pytest.approx(math.log(6))


def test_loss_of_perfect_logits_is_near_zero():
    assert contrastive_loss(50 * torch.eye(4)).item() < 1e-6


def test_loss_is_symmetric_in_images_and_texts():
    logits = torch.randn(5, 5, generator=torch.Generator().manual_seed(1))
    assert contrastive_loss(logits).item() == pytest.approx(contrastive_loss(logits.T).item())


def test_duplicate_captions_are_not_negatives():
    """Items 0 and 1 show the same thing: matching 0 with 1's caption costs nothing extra."""
    keys = ["a red circle", "a red circle", "two blue stars", "a pink heart"]
    logits = 10 * torch.eye(4)
    swapped = logits[:, [1, 0, 2, 3]]  # image 0 now prefers caption 1, image 1 caption 0
    assert contrastive_loss(swapped, keys).item() == pytest.approx(
        contrastive_loss(logits, keys).item())
    assert contrastive_loss(swapped).item() > contrastive_loss(logits).item() + 4


def test_loss_gradient_reaches_temperature():
    net = tiny_model().net
    images = torch.randn(4, 3, 32, 32)
    loss = contrastive_loss(net(images, CAPTIONS[:4]))
    loss.backward()
    assert net.logit_scale.grad is not None and net.logit_scale.grad.abs() > 0
    assert net.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Towers and keys


def test_embeddings_are_unit_vectors_and_features_have_width():
    model = tiny_model()
    images = [s.image for s in fixed_split("val", 3, 32)]
    assert model.image_features(images).shape == (3, PRESETS["clip-tiny"].width)
    emb_i, emb_t = model.embed_images(images), model.embed_texts(CAPTIONS)
    assert emb_i.shape == (3, 32) and emb_t.shape == (5, 32)
    torch.testing.assert_close(emb_i.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(emb_t.norm(dim=-1), torch.ones(5))


def test_other_image_sizes_are_resized():
    model = tiny_model()
    assert model.embed_images([s.image for s in fixed_split("val", 2, 64)]).shape == (2, 32)


def test_image_size_must_fit_the_stages():
    with pytest.raises(InvalidInputError, match="divisible"):
        ContrastiveConfig(image_size=36, channels=(8, 16, 32))


def test_scene_key_ignores_wording():
    same = ["a red circle to the left of a blue square", "a blue square right of a red circle",
            "lingkaran merah di sebelah kiri persegi biru"]
    assert len({scene_key(parse_prompt(p)) for p in same}) == 1
    assert scene_key(parse_prompt("a red circle and a blue square")) == scene_key(
        parse_prompt("a blue square and a red circle"))
    different = ["a red circle", "a large red circle", "two red circles",
                 "a red circle right of a blue square"]
    assert len({scene_key(parse_prompt(p)) for p in different}) == len(different)


# ---------------------------------------------------------------------------------------------
# Saving and loading


def test_save_load_round_trip(tmp_path):
    model = tiny_model()
    model.save(tmp_path / "clip")
    loaded = load_contrastive(tmp_path / "clip")
    assert isinstance(loaded, ContrastiveModel) and loaded.sha256 == model.sha256
    images = [s.image for s in fixed_split("val", 4, 32)]
    torch.testing.assert_close(loaded.similarity(images, CAPTIONS),
                               model.similarity(images, CAPTIONS), rtol=0, atol=0)
    cfg = json.loads((tmp_path / "clip" / "config.json").read_text())
    assert cfg["family"] == "contrastive" and cfg["contrastive"]["width"] == 64
    assert (tmp_path / "clip" / "tokenizer.json").is_file()
    assert cfg["components"] == {"model": "model.safetensors"}  # one component, the usual file


def test_corrupt_weights_are_refused(tmp_path):
    tiny_model().save(tmp_path / "clip")
    (tmp_path / "clip" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CorruptFileError):
        ContrastiveModel.load(tmp_path / "clip")


def test_load_contrastive_refuses_a_generator(tiny_model_dir):
    with pytest.raises(InvalidInputError, match="contrastive model is needed"):
        load_contrastive(tiny_model_dir)
    with pytest.raises(CorruptFileError, match="holds a 'diffusion' model, not a contrastive"):
        ContrastiveModel.load(tiny_model_dir)


def test_frozen_minilm_tower(tmp_path):
    """Frozen MiniLM + a trainable head: only the head is saved, and loading reproduces it."""
    text = TextSetup.build("minilm")
    cfg = ContrastiveConfig(image_size=32, channels=(8, 16), width=32, embed_dim=16,
                            text_head_depth=1, text_head_heads=4)
    torch.manual_seed(0)
    model = ContrastiveModel(ContrastiveNet(cfg, text.dim, None), text, name="clip-minilm")
    assert not any(k.startswith("text.") for k in model.net.state_dict())
    model.save(tmp_path / "m")
    loaded = ContrastiveModel.load(tmp_path / "m")
    torch.testing.assert_close(loaded.embed_texts(CAPTIONS), model.embed_texts(CAPTIONS))


# ---------------------------------------------------------------------------------------------
# Training through the shared loop


def test_overfits_a_few_pairs(tmp_path):
    """Eight fixed pairs: the loss collapses and every pair retrieves its partner both ways."""
    from gambar.train.loop import train

    recipe = overfit_recipe(tmp_path / "run")
    model_dir = train(ContrastiveTask, recipe, progress=False)
    losses = [json.loads(line)["loss"]
              for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert losses[0] > 0.5 and losses[-1] < 0.05, losses
    model = ContrastiveModel.load(model_dir)
    task = ContrastiveTask(recipe)
    items = [task.stream[i] for i in range(8)]
    sim = model.similarity([s.image for s in items], [s.caption for s in items])
    assert sim.argmax(1).tolist() == list(range(8))
    assert sim.argmax(0).tolist() == list(range(8))
    summary = json.loads((model_dir / "config.json").read_text())["training"]
    assert summary["steps"] == 100


def test_untrained_model_does_not_retrieve(tmp_path):
    """The overfit test's check is not trivially met: before training, retrieval is poor."""
    task = ContrastiveTask(overfit_recipe(tmp_path / "run"))
    items = [task.stream[i] for i in range(8)]
    sim = task.wrap(task.model).similarity([s.image for s in items], [s.caption for s in items])
    assert (sim.argmax(1) == torch.arange(8)).sum() < 6


def test_sample_grid_shows_images_and_similarities(tmp_path):
    task = ContrastiveTask(overfit_recipe(tmp_path / "run"))
    grid = task.sample_grid(task.model)
    assert grid.size == (8 * 32, 32 + 8 * 32)
    assert task.model.training  # sample_grid restores the mode it found


def test_a_mix_of_sources_gives_keys_per_source(tmp_path):
    """`[data] mix`: emoji and glyphs join the shapes; their keys group views of one thing."""
    recipe = overfit_recipe(tmp_path / "run")
    recipe["data"] = {"size": 32, "mix": {"shapes": 2, "emoji": 1, "glyphs": 1}}
    task = ContrastiveTask(recipe)
    batch = next(task.batches(0, 0, 1, 16))
    assert batch["images"].shape == (16, 3, 32, 32)
    prefixes = [k.split(":")[0] for k in batch["keys"]]
    assert prefixes.count("emoji") == 4 and prefixes.count("glyph") == 4
    shapes = [k for k in batch["keys"] if ":" not in k]
    assert len(shapes) == 8
    assert task.data_summary["mix"] == {"shapes": 2, "emoji": 1, "glyphs": 1}
    # the same items on a resumed run (batch 1 starts where batch 0 ended)
    again = next(ContrastiveTask(recipe).batches(1, 0, 1, 8))
    assert again["captions"] == batch["captions"][8:]
    loss = task.loss(task.model, batch, torch.Generator())
    assert torch.isfinite(loss) and loss.item() > 0


def test_unknown_data_key_is_an_error(tmp_path):
    recipe = overfit_recipe(tmp_path / "run")
    recipe["data"]["colour"] = "red"
    with pytest.raises(InvalidInputError, match="colour"):
        ContrastiveTask(recipe)


def test_cli_trains_the_tiny_recipe(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", str(CONFIGS / "contrastive-tiny.toml"),
                 "--set", f"train.run_dir={run_dir}", "--set", "train.steps=3",
                 "--set", "model.embed_dim=16", "-q"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((run_dir / "model" / "config.json").read_text())["contrastive"][
        "embed_dim"] == 16


@pytest.mark.parametrize("name", ["contrastive.toml", "contrastive-tiny.toml"])
def test_shipped_recipes_parse(name):
    recipe = load_recipe(CONFIGS / name)
    assert recipe["family"] == "contrastive"
    cfg = _model_config(recipe["model"], recipe["data"]["size"])
    assert cfg.image_size == recipe["data"]["size"] and cfg.final_side >= 2
    train_config(recipe)  # the [train] section is valid


def test_shipped_evaluator_retrieves_seen_and_held_out_scenes():
    """The built-in contrastive model (fp16 weights) does what its card says, on fresh scenes."""
    from gambar.evaluation.clip_score import contrastive_report

    model = load_contrastive("contrastive")
    report = contrastive_report(model, n=40, seed=123_456)
    for split in ("seen", "heldout"):
        for lang in ("en", "id"):
            assert report[split][lang]["r_precision"] >= 0.9, (split, lang, report[split][lang])
