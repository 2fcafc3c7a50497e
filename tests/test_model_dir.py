"""Model directories: the SHA256SUMS manifest, config values checked on load, and evaluators
(a contrastive model) refused where an image is to be drawn. Issue 19's reproductions."""

import hashlib
import json
import re
import shutil
import socket
from pathlib import Path

import pytest
import torch
from torch import nn

import gambar
from gambar.cli import main
from gambar.contrastive.model import ContrastiveModel, load_contrastive
from gambar.errors import CorruptFileError, InvalidInputError
from gambar.model_dir import (
    MANIFEST,
    builtin_models,
    load_components,
    model_sha256,
    open_model_dir,
    read_config,
    save_model_dir,
    verify_model_dir,
)
from gambar.registry import is_generator, model_class, pipeline_class, task_factory
from gambar.schedule import NoiseSchedule
from helpers_models import make_tiny_pipeline

# Recorded in the provenance of every image made with the built-in model; --replay compares it.
DEFAULT_MODEL_SHA256 = "95fdd6d0c5626d2559342407f359c78ef5cf8230b375d80d681fd39debdc0f91"


@pytest.fixture
def model(tiny_model_dir, tmp_path):
    """A fresh copy of the tiny saved model (config.json, model.safetensors, tokenizer.json)."""
    return shutil.copytree(tiny_model_dir, tmp_path / "m")


def flip_byte(path, offset=None):
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x01
    path.write_bytes(bytes(data))


def reseal(path):
    """Rewrite SHA256SUMS by hand (sha256sum's format), as if the edited files were saved so."""
    names = sorted(p.name for p in path.iterdir() if p.suffix in (".json", ".safetensors"))
    lines = [f"{hashlib.sha256((path / n).read_bytes()).hexdigest()}  {n}\n" for n in names]
    (path / MANIFEST).write_text("".join(lines))


def edit_config(path, keys, value):
    cfg = json.loads((path / "config.json").read_text())
    node = cfg
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    (path / "config.json").write_text(json.dumps(cfg))
    reseal(path)


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


# ---------------------------------------------------------------------------------------------
# The manifest


def test_save_writes_a_sha256sum_manifest_the_model_hash_leaves_out(model):
    lines = (model / MANIFEST).read_text().splitlines()
    listed = {line.split("  ")[1]: line.split("  ")[0] for line in lines}
    assert set(listed) == {"config.json", "model.safetensors", "tokenizer.json"}
    for name, digest in listed.items():
        assert hashlib.sha256((model / name).read_bytes()).hexdigest() == digest
    # The model hash is what it was before manifests existed: names and bytes of those files.
    before = hashlib.sha256()
    for name in sorted(listed):
        before.update(name.encode() + (model / name).read_bytes())
    assert gambar.load(model).sha256 == model_sha256(model) == before.hexdigest()


def test_builtin_models_verify_and_the_default_hash_never_changes():
    models = builtin_models()
    for path in models.values():
        assert (path / MANIFEST).is_file(), f"{path} ships without {MANIFEST}"
        verify_model_dir(path)
    assert verify_model_dir(models["default"]) == DEFAULT_MODEL_SHA256


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json"])
@pytest.mark.parametrize("where", ["middle", "last"])
def test_a_flipped_byte_is_a_one_line_error_naming_the_file(model, name, where):
    flip_byte(model / name, None if where == "middle" else -1)
    with pytest.raises(CorruptFileError, match=f"{name} does not match its sha256") as err:
        gambar.load(model)
    assert "\n" not in str(err.value)


def test_a_flipped_byte_in_a_contrastive_model_is_refused(tmp_path):
    clip = shutil.copytree(builtin_models()["contrastive"], tmp_path / "clip")
    flip_byte(clip / "model.safetensors")
    with pytest.raises(CorruptFileError, match="model.safetensors does not match"):
        load_contrastive(clip)
    with pytest.raises(CorruptFileError, match="model.safetensors does not match"):
        ContrastiveModel.load(clip)


def test_cli_reports_a_flipped_byte_in_one_line(model, tmp_path, capsys):
    flip_byte(model / "model.safetensors")
    code = main(["generate", "a red circle", "--model", str(model), "--steps", "2", "-q",
                 "-o", str(tmp_path / "x.png")])
    assert code == 2 and "model.safetensors" in one_line_error(capsys)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: (m / "tokenizer.json").unlink(), "tokenizer.json is missing"),
        (lambda m: (m / "notes.json").write_text("{}"), "notes.json is not listed"),
        (lambda m: (m / MANIFEST).write_text("not a manifest\n"), "SHA256SUMS line 1"),
        (lambda m: (m / MANIFEST).write_text(f"{'0' * 64}  ../config.json\n"), "SHA256SUMS line"),
        (lambda m: (m / MANIFEST).write_bytes(b"\xff\xfe"), "SHA256SUMS is unreadable"),
    ],
    ids=["missing-file", "unlisted-file", "malformed", "path-outside", "binary"],
)
def test_a_manifest_that_disagrees_with_the_directory_is_an_error(model, change, message):
    change(model)
    with pytest.raises(CorruptFileError, match=message):
        gambar.load(model)


def test_a_model_saved_without_a_manifest_still_loads(model):
    """Models saved by gambar before manifests existed: no check, same hash, same model."""
    sha = model_sha256(model)
    (model / MANIFEST).unlink()
    assert gambar.load(model).sha256 == sha


def test_saving_again_into_the_directory_rewrites_the_manifest(model):
    pipe = make_tiny_pipeline()
    pipe.extra["defaults"] = {"steps": 3}
    pipe.save(model)
    assert gambar.load(model).default_options.steps == 3


# ---------------------------------------------------------------------------------------------
# Components: several networks in one directory (a cascade, unCLIP), one hash over all of them


def two_parts(seed=0):
    torch.manual_seed(seed)
    return {"model": nn.Linear(3, 4), "prior": nn.Sequential(nn.Linear(4, 2), nn.Tanh())}


@pytest.fixture
def cascade(tmp_path):
    """A saved two-component directory: model.safetensors + prior.safetensors."""
    path = tmp_path / "cascade"
    save_model_dir(path, two_parts(), {"family": "toy", "name": "c"})
    return path


def test_two_components_round_trip(cascade):
    cfg, sha256 = open_model_dir(cascade, family="toy")
    assert cfg["components"] == {"model": "model.safetensors", "prior": "prior.safetensors"}
    assert sha256 == model_sha256(cascade)
    listed = {line.split("  ")[1] for line in (cascade / MANIFEST).read_text().splitlines()}
    assert listed == {"config.json", "model.safetensors", "prior.safetensors"}
    loaded = two_parts(seed=1)
    load_components(cascade, loaded, config=cfg)
    for name, module in two_parts().items():
        for key, value in module.state_dict().items():
            assert torch.equal(loaded[name].state_dict()[key], value), (name, key)


@pytest.mark.parametrize("changed", ["model", "prior"])
def test_the_hash_covers_every_component(cascade, tmp_path, changed):
    parts = two_parts()
    with torch.no_grad():
        next(parts[changed].parameters()).add_(1.0)
    other = tmp_path / "other"
    assert save_model_dir(other, parts, {"family": "toy", "name": "c"}) != model_sha256(cascade)
    # and the same parts saved again give the same hash (nothing but the weights differ)
    assert save_model_dir(tmp_path / "same", two_parts(), {"family": "toy", "name": "c"}) == (
        model_sha256(cascade))


def relist(path, components):
    cfg = json.loads((path / "config.json").read_text())
    cfg["components"] = components
    (path / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    ("change", "asked", "message"),
    [
        (lambda m: (m / "prior.safetensors").unlink(), None,
         r"prior.safetensors is missing \(component 'prior' listed in config.json\)"),
        (lambda m: (m / "extra.safetensors").write_bytes(b"x"), None,
         "extra.safetensors is not a component listed in config.json"),
        (lambda m: relist(m, {"model": "model.safetensors", "prior": "prior.safetensors",
                              "decoder": "decoder.safetensors"}), None,
         "lists the components decoder, model, prior; this model has model, prior"),
        (None, ["model"], "lists the components model, prior; this model has model;"),
        (lambda m: relist(m, {"model": "model.safetensors", "prior": "../prior.safetensors"}),
         None, "component 'prior' -> '../prior.safetensors' is not"),
        (lambda m: relist(m, {"model": "model.safetensors", "Prior": "Prior.safetensors"}),
         None, "component 'Prior'"),
        (lambda m: relist(m, ["model.safetensors"]), None, "'components' must map"),
    ],
    ids=["listed-but-absent-file", "file-not-listed", "listed-not-asked", "asked-not-listed",
         "file-outside", "bad-name", "not-a-map"],
)
def test_a_component_mismatch_is_a_one_line_error(cascade, change, asked, message):
    if change:
        change(cascade)
    reseal(cascade)  # as if saved so: the component checks, not the manifest, must catch it
    modules = two_parts()
    with pytest.raises(CorruptFileError, match=message) as err:
        cfg, _ = open_model_dir(cascade)
        load_components(cascade, {k: modules[k] for k in asked or modules}, config=cfg)
    assert "\n" not in str(err.value)


def test_a_deleted_component_is_caught_by_the_manifest_first(cascade):
    (cascade / "prior.safetensors").unlink()
    with pytest.raises(CorruptFileError, match=r"prior.safetensors is missing \(listed in SHA256"):
        open_model_dir(cascade)


def test_a_directory_saved_before_components_loads_as_one_model(tmp_path):
    """config.json without "components" (every model saved so far): one component, "model"."""
    path = tmp_path / "old"
    module = nn.Linear(3, 4)
    save_model_dir(path, module, {"family": "toy"})  # a bare module is {"model": module}
    cfg = json.loads((path / "config.json").read_text())
    del cfg["components"]
    (path / "config.json").write_text(json.dumps(cfg))
    reseal(path)
    fresh = nn.Linear(3, 4)
    cfg, _ = open_model_dir(path)
    load_components(path, {"model": fresh}, config=cfg)
    assert torch.equal(fresh.weight, module.weight)
    with pytest.raises(CorruptFileError, match="lists the components model; this model has a, "
                                               "model"):
        load_components(path, {"model": fresh, "a": nn.Linear(1, 1)})


V1_DIR = Path(__file__).resolve().parents[1] / "models" / "default-v1"
V1_SHA256 = "33a29ac6b3fc880e93cf8aec0d82935c5f9b802834e900162025b9286b43cad0"


def test_the_default_model_keeps_its_hash_and_loads():
    assert read_config(builtin_models()["default"])["components"] == {
        "model": "model.safetensors", "planner": "planner.safetensors",
        "sr_128": "sr_128.safetensors"}
    assert gambar.load("default").sha256 == DEFAULT_MODEL_SHA256


def test_v1_saved_before_components_still_loads_by_path_with_its_hash():
    assert "components" not in read_config(V1_DIR)
    assert gambar.load(str(V1_DIR)).sha256 == V1_SHA256


def test_a_new_save_lists_its_component(model):
    assert read_config(model)["components"] == {"model": "model.safetensors"}


def test_saving_fewer_components_removes_the_old_ones_but_never_a_stranger(cascade):
    save_model_dir(cascade, {"model": nn.Linear(3, 4)}, {"family": "toy"})
    assert not (cascade / "prior.safetensors").exists()
    cfg, _ = open_model_dir(cascade)
    load_components(cascade, {"model": nn.Linear(3, 4)}, config=cfg)
    (cascade / "notes.safetensors").write_bytes(b"mine")
    with pytest.raises(InvalidInputError, match="notes.safetensors is in the model directory but "
                                                "is not one of the model's components"):
        save_model_dir(cascade, two_parts(), {"family": "toy"})
    assert (cascade / "notes.safetensors").read_bytes() == b"mine"
    assert not (cascade / "prior.safetensors").exists()  # refused before writing anything


@pytest.mark.parametrize("name", ["", "Prior", "1st", "a-b", "x" * 33, "../x"])
def test_component_names_are_plain(tmp_path, name):
    with pytest.raises(ValueError, match="component name"):
        save_model_dir(tmp_path / "m", {name: nn.Linear(1, 1)}, {"family": "toy"})


def test_storage_dtype_loads_as_float32(tmp_path):
    parts = two_parts()
    save_model_dir(tmp_path / "m", parts, {"family": "toy"}, dtype=torch.float16)
    loaded = two_parts(seed=1)
    load_components(tmp_path / "m", loaded)
    assert loaded["model"].weight.dtype == torch.float32
    torch.testing.assert_close(loaded["model"].weight, parts["model"].weight, atol=1e-3, rtol=0)


def test_open_model_dir_refuses_another_family(cascade):
    with pytest.raises(CorruptFileError, match="holds a 'toy' model, not a contrastive one"):
        open_model_dir(cascade, family="contrastive")


# ---------------------------------------------------------------------------------------------
# config.json values (a manifest rewritten to match, as by a hand edit or an older save)

BAD_CONFIG = [
    (["unet", "base_channels"], "64", "unet.base_channels"),
    (["unet", "base_channels"], -16, "unet.base_channels"),
    (["unet", "base_channels"], 10**6, "unet.base_channels"),
    (["unet"], "x", "unet"),
    (["unet", "channel_mults"], 3, "unet.channel_mults"),
    (["unet", "channel_mults"], [1, "2"], r"unet.channel_mults\[1\]"),
    (["unet", "channel_mults"], [], "unet.channel_mults"),
    (["unet", "heads"], 0, "unet.heads"),
    (["unet", "heads"], 5, "unet.heads"),
    (["unet", "cross_attention_levels"], [7], "unet.cross_attention_levels"),
    (["unet", "dropout"], float("nan"), "unet.dropout"),
    (["unet", "image_channels"], 1, "unet.image_channels"),
    (["unet", "nope"], 1, "unet.nope"),
    (["diffusion", "timesteps"], -10, "diffusion.timesteps"),
    (["diffusion", "timesteps"], 10**9, "diffusion.timesteps"),  # hung building the schedule
    (["diffusion", "image_size"], -64, "diffusion.image_size"),
    (["diffusion", "schedule_shift"], 0, "diffusion.schedule_shift"),
    (["diffusion", "prediction"], ["v"], "diffusion.prediction"),
    (["diffusion"], [1, 2], "diffusion"),
    (["defaults", "steps"], "many", "steps"),
    (["defaults", "steps"], 0, "steps"),
    (["defaults", "steps"], 5000, "steps"),
    (["defaults", "guidance"], [1], "guidance"),
    (["defaults", "guidance"], -1.0, "guidance"),
    (["defaults", "sampler"], "plms", "sampler"),
    (["defaults", "size"], -64, "size"),
    (["defaults", "size"], 30, "size"),
    (["defaults", "precision"], "fp8", "precision"),
    (["defaults", "stepz"], 3, "stepz"),
    (["defaults"], [1], "defaults"),
    (["name"], 5, "name"),
    (["text_encoder"], 5, "text_encoder|int"),
    (["schedule", "T"], 10, "schedule"),
]


@pytest.mark.parametrize(("keys", "value", "key"), BAD_CONFIG,
                         ids=[f"{'.'.join(k)}={v!r}"[:40] for k, v, _ in BAD_CONFIG])
def test_a_bad_config_value_is_a_one_line_error_naming_key_and_file(model, keys, value, key):
    edit_config(model, keys, value)
    with pytest.raises(CorruptFileError) as err:
        gambar.load(model)
    message = str(err.value)
    assert "\n" not in message and "config.json" in message
    assert re.search(key, message), message


@pytest.mark.parametrize("missing", ["unet", "diffusion", "text_encoder"])
def test_a_missing_config_section_is_named(model, missing):
    cfg = json.loads((model / "config.json").read_text())
    del cfg[missing]
    (model / "config.json").write_text(json.dumps(cfg))
    reseal(model)
    with pytest.raises(CorruptFileError, match=f"'{missing}' is missing"):
        gambar.load(model)


def test_a_config_that_is_not_json_or_utf8_is_named(model):
    (model / MANIFEST).unlink()  # the parser's own check, as for a model saved before manifests
    (model / "config.json").write_bytes(b'{"format": "gambar/1", "family": "\xff"}')
    with pytest.raises(CorruptFileError, match="config.json is not valid JSON"):
        gambar.load(model)
    (model / "config.json").write_text("[" * 100_000)
    with pytest.raises(CorruptFileError, match="config.json is not valid JSON"):
        gambar.load(model)


@pytest.mark.parametrize(
    "data",
    ["{", [1, 2], {"kind": "cosine", "T": 10**12}, {"kind": "cosine", "T": "many"},
     {"kind": "custom", "alphas_cumprod": [10**400, 0.1]}],
    ids=["not-json", "a-list", "huge-T", "T-a-string", "overflow"],
)
def test_a_bad_schedule_from_a_file_is_a_corrupt_file(data):
    with pytest.raises(CorruptFileError, match="noise schedule"):
        NoiseSchedule.from_json(data)


# ---------------------------------------------------------------------------------------------
# Generators and evaluators


def test_registry_separates_generators_from_evaluators():
    assert is_generator("diffusion") and not is_generator("contrastive")
    assert model_class("contrastive") is ContrastiveModel
    assert task_factory("contrastive").__name__ == "ContrastiveTask"  # still trains
    with pytest.raises(InvalidInputError, match="evaluator, not an image generator"):
        pipeline_class("contrastive")
    with pytest.raises(InvalidInputError, match="unknown model family 'dalle'"):
        pipeline_class("dalle")


def test_load_refuses_an_evaluator_in_one_line():
    with pytest.raises(InvalidInputError, match="'contrastive' is a contrastive model, an "
                                                "evaluator, not an image generator"):
        gambar.load("contrastive")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.parametrize("command", [["generate", "a red circle"], ["serve", "--port"]])
def test_cli_refuses_an_evaluator_where_images_are_drawn(command, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    if command[-1] == "--port":
        command = [*command, free_port()]
    assert main([*command, "--model", "contrastive"]) == 2
    assert "evaluator, not an image generator" in one_line_error(capsys)
    assert not list(tmp_path.iterdir())


def test_a_model_path_the_os_refuses_is_not_found(capsys, tmp_path):
    assert main(["generate", "a red circle", "--model", "a" * 5000,
                 "-o", str(tmp_path / "x.png")]) == 2
    assert "no model named or at" in one_line_error(capsys)
