import json

import numpy as np
import pytest
from PIL import Image

import gambar
from gambar.errors import CorruptFileError, InvalidInputError, ModelNotFoundError
from gambar.inputs import digest
from gambar.provenance import read_provenance, save_png
from helpers_models import make_tiny_pipeline


def pixels(gen):
    return np.asarray(gen.image, dtype=np.int16)


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return gambar.load(tiny_model_dir)


def test_seed_gives_same_image_whatever_the_batch(pipe):
    prompts = ["a red circle", "dua bintang biru", "a red circle"]
    batch = pipe.generate(prompts, seeds=[11, 12, 13], steps=6, progress=False)
    for k, (p, s) in enumerate(zip(prompts, [11, 12, 13], strict=True)):
        alone = pipe.generate([p], seeds=[s], steps=6, progress=False)[0]
        assert np.abs(pixels(alone) - pixels(batch[k])).max() <= 1  # 1/255 per pixel
    assert np.abs(pixels(batch[0]) - pixels(batch[2])).max() > 10, "seeds 11 and 13 look alike"


def test_bf16_precision_is_close_seed_invariant_and_recorded(pipe):
    prompts = ["a red circle", "dua bintang biru", "a red circle"]
    fp32 = pipe.generate(prompts, seeds=[11, 12, 13], steps=6, progress=False)
    bf16 = pipe.generate(prompts, seeds=[11, 12, 13], steps=6, precision="bf16", progress=False)
    for k, (p, s) in enumerate(zip(prompts, [11, 12, 13], strict=True)):
        alone = pipe.generate([p], seeds=[s], steps=6, precision="bf16", progress=False)[0]
        assert np.abs(pixels(alone) - pixels(bf16[k])).max() <= 1  # 1/255 per pixel
        # bf16 arithmetic moves pixels a little, never redraws the image
        assert np.abs(pixels(fp32[k]) - pixels(bf16[k])).mean() < 4
    assert bf16[0].provenance["precision"] == "bf16"
    assert bf16[0].provenance["dtype"] == "bfloat16"
    assert fp32[0].provenance["precision"] == "fp32"


@pytest.mark.parametrize("sampler", ["dpmpp", "ddim", "ddpm", "euler"])
def test_every_sampler_draws_and_is_deterministic(pipe, sampler):
    a = pipe.generate(["a red circle"], seeds=[5], steps=4, sampler=sampler, progress=False)[0]
    b = pipe.generate(["a red circle"], seeds=[5], steps=4, sampler=sampler, progress=False)[0]
    assert a.image.size == (32, 32)
    assert np.array_equal(pixels(a), pixels(b))
    assert a.provenance["sampler"] == sampler and a.provenance["steps"] == 4


def test_negative_prompt_and_guidance_change_the_image(pipe):
    base = pipe.generate(["a red circle"], seeds=[3], steps=4, guidance=3.0, progress=False)[0]
    neg = pipe.generate(["a red circle"], seeds=[3], steps=4, guidance=3.0,
                        negative_prompt="three blue stars", progress=False)[0]
    off = pipe.generate(["a red circle"], seeds=[3], steps=4, guidance=1.0, progress=False)[0]
    assert np.abs(pixels(base) - pixels(neg)).max() > 0
    assert np.abs(pixels(base) - pixels(off)).max() > 0
    assert neg.provenance["negative_prompt"] == "three blue stars"


def test_provenance_round_trips_through_png(pipe, tmp_path):
    gen = pipe.generate(["sebuah lingkaran merah"], seeds=[42], steps=3, progress=False)[0]
    path = save_png(tmp_path / "x.png", gen.image, gen.provenance)
    prov = read_provenance(path)
    assert prov == json.loads(json.dumps(gen.provenance))
    for key in ("prompt", "seed", "model_sha256", "sampler", "steps", "guidance",
                "negative_prompt", "text_encoder", "size", "torch_version", "gambar_version"):
        assert key in prov
    assert prov["model_sha256"] == pipe.sha256 and len(pipe.sha256) == 64
    with pytest.raises(InvalidInputError, match="already exists"):
        save_png(path, gen.image, gen.provenance)


def test_save_load_gives_identical_images(tmp_path):
    pipe = make_tiny_pipeline()
    before = pipe.generate(["a red circle"], seeds=[9], steps=3, progress=False)[0]
    pipe.save(tmp_path / "m")
    again = gambar.load(tmp_path / "m")
    after = again.generate(["a red circle"], seeds=[9], steps=3, progress=False)[0]
    assert np.array_equal(pixels(before), pixels(after))
    assert again.sha256 == pipe.sha256


def test_a_model_at_the_largest_size_a_recipe_accepts_loads(tmp_path):
    """Recipes took data.size up to 512, but load() refused a model whose trained size was over
    generate()'s 256: the largest size a diffusion recipe accepts must load and be its default."""
    from gambar.generators.diffusion.config import DiffusionConfig
    from gambar.generators.diffusion.pipeline import DiffusionPipeline
    from gambar.generators.diffusion.training import MAX_SAMPLE_SIZE, read_recipe

    unet = {"preset": "unet-tiny"}
    read_recipe({"data": {"size": MAX_SAMPLE_SIZE}, "unet": unet})
    with pytest.raises(InvalidInputError, match="larger than"):
        read_recipe({"data": {"size": MAX_SAMPLE_SIZE + 4}, "unet": unet})
    tiny = make_tiny_pipeline()
    DiffusionPipeline(tiny.model, tiny.text, DiffusionConfig(image_size=MAX_SAMPLE_SIZE)
                      ).save(tmp_path / "m")
    assert gambar.load(tmp_path / "m").default_options.size == MAX_SAMPLE_SIZE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompts": [""]}, "prompt is empty"),
        ({"prompts": ["x" * 501]}, "limit is 500"),
        ({"size": 30}, "size must be a multiple"),
        ({"size": 1024}, "size must be between 8 and 256"),
        ({"steps": 0}, "steps must be between"),
        ({"guidance": -1.0}, "guidance must be between"),
        ({"sampler": "plms"}, "unknown sampler"),
        ({"seeds": [-1]}, "seed must be between"),
        ({"batch_size": 0}, "batch size must be"),
        ({"precision": "fp16"}, "unknown precision 'fp16'; choose one of: fp32, bf16"),
        ({"eta": 0.5}, "eta applies to the ddim sampler only"),
        ({"stepz": 3}, "option 'stepz' does not apply.*did you mean 'steps'"),
        ({"strength": 0.5}, "strength needs the 'init' input"),
        ({"inputs": {"init": "init.png"}}, "must be a PIL image"),
        ({"guidance": 10**400}, "guidance must be a number of sensible size"),
        ({"inputs": {"layout": None}}, "takes no 'layout' input"),
    ],
)
def test_bad_options_give_clear_errors(pipe, kwargs, message):
    args = {"prompts": ["a red circle"], "seeds": [1], "progress": False, **kwargs}
    with pytest.raises(InvalidInputError, match=message):
        pipe.generate(args.pop("prompts"), **args)


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "saved-before-manifests"])
def test_missing_and_corrupt_models_are_reported(tiny_model_dir, tmp_path, manifest):
    """With SHA256SUMS the checksum names the damaged file; without one (a model saved by an
    older gambar) the safetensors and JSON parsers still do."""
    with pytest.raises(ModelNotFoundError, match="no model named"):
        gambar.load(tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_model_dir.iterdir():
        if manifest or f.name != "SHA256SUMS":
            (broken / f.name).write_bytes(f.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CorruptFileError, match="model.safetensors"):
        gambar.load(broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="config.json"):
        gambar.load(broken)


def test_saving_one_model_twice_gives_the_same_bytes_and_hash(tmp_path):
    """The model hash is the model's identity: saving the same weights again must not change it
    (safetensors writes a metadata map in hash order, so this can fail with several keys)."""
    import torch

    pipe = make_tiny_pipeline()
    for k in range(8):
        pipe.save(tmp_path / f"m{k}", dtype=torch.float16)
    blobs = {(tmp_path / f"m{k}" / "model.safetensors").read_bytes() for k in range(8)}
    assert len(blobs) == 1
    assert len({gambar.load(tmp_path / f"m{k}").sha256 for k in range(8)}) == 1


# ---- named inputs: img2img and inpainting --------------------------------------------------


def _init_image(pipe):
    (gen,) = pipe.generate(["a red circle"], seeds=[21], steps=4, progress=False)
    return gen.image


def test_img2img_keeps_more_of_the_init_image_at_low_strength(pipe):
    init = _init_image(pipe)
    base = np.asarray(init, dtype=np.int16)
    light, heavy = (pipe.generate(["three blue stars"], seeds=[5], steps=10, strength=s,
                                  inputs={"init": init}, progress=False)[0]
                    for s in (0.2, 1.0))
    assert np.abs(pixels(light) - base).mean() < np.abs(pixels(heavy) - base).mean() / 2
    assert light.provenance["strength"] == 0.2
    assert light.provenance["inputs"] == {"init": digest(init)}
    # A batch draws each image as it would alone (per-image seeds), inputs included.
    batch = pipe.generate(["three blue stars", "a red circle"], seeds=[5, 6], steps=10,
                          strength=0.2, inputs={"init": init}, progress=False)
    assert np.array_equal(pixels(batch[0]), pixels(light))


def test_img2img_runs_only_the_redrawn_share_of_the_steps(pipe):
    seen = []
    pipe.generate(["a red circle"], seeds=[1], steps=10, strength=0.3,
                  inputs={"init": _init_image(pipe)}, progress=lambda d, t: seen.append(t))
    assert set(seen) == {3}


@pytest.mark.parametrize(("steps", "strength"), [(4, 0.0), (3, 0.2)])  # 0.2 x 3 rounds to 0
def test_img2img_that_redraws_no_step_returns_the_init_image(pipe, steps, strength):
    from gambar.generators.diffusion.pipeline import _from_image
    from gambar.tensors import to_image

    # Not square and not the model's size: the answer is the init image as the model reads it.
    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), "RGB")
    seen = []
    (gen,) = pipe.generate(["a red circle"], seeds=[1], steps=steps, strength=strength,
                           inputs={"init": init}, progress=lambda d, t: seen.append(d))
    assert np.array_equal(pixels(gen), np.asarray(to_image(_from_image(init, 32, "RGB")),
                                                  dtype=np.int16))
    assert seen == []  # nothing sampled
    assert gen.provenance["strength"] == strength
    assert gen.provenance["inputs"] == {"init": digest(init)}


@pytest.mark.parametrize("sampler", ["dpmpp", "ddpm"])
def test_img2img_at_strength_one_ignores_the_init_image(pipe, sampler):
    plain = pipe.generate(["three blue stars"], seeds=[5], steps=4, sampler=sampler,
                          progress=False)[0]
    (redrawn,) = pipe.generate(["three blue stars"], seeds=[5], steps=4, sampler=sampler,
                               strength=1.0, inputs={"init": _init_image(pipe)}, progress=False)
    assert np.array_equal(pixels(redrawn), pixels(plain))


def test_inpainting_keeps_the_unmasked_pixels_exactly(pipe):
    init = _init_image(pipe)
    mask = Image.new("L", init.size, 0)
    mask.paste(255, (init.width // 2, 0, init.width, init.height))  # redraw the right half
    (gen,) = pipe.generate(["three blue stars"], seeds=[8], steps=6, strength=1.0,
                           inputs={"init": init, "mask": mask}, progress=False)
    half = init.width // 2
    assert np.array_equal(pixels(gen)[:, :half], np.asarray(init, dtype=np.int16)[:, :half])
    assert not np.array_equal(pixels(gen)[:, half:], np.asarray(init, dtype=np.int16)[:, half:])
    assert set(gen.provenance["inputs"]) == {"init", "mask"}
    with pytest.raises(InvalidInputError, match="a mask needs an init image"):
        pipe.generate(["a red circle"], seeds=[1], inputs={"mask": mask}, progress=False)


def test_an_option_that_needs_an_input_is_refused_even_fully_resolved(pipe):
    """The server passes resolved Options, not changes: strength without init must still be
    refused there, not silently ignored."""
    opts = pipe.default_options.with_changes({"strength": 0.3})
    with pytest.raises(InvalidInputError, match="strength needs the 'init' input"):
        pipe.generate(["a red circle"], seeds=[1], options=opts, progress=False)


def test_a_stored_ddim_eta_does_not_block_other_samplers(tiny_model_dir, tmp_path):
    import shutil

    from gambar.generators.diffusion.pipeline import DiffusionPipeline

    model = DiffusionPipeline.load(tiny_model_dir)
    model.extra["defaults"] = {"sampler": "ddim", "eta": 0.5}
    model.save(tmp_path / "m")
    pipe = gambar.load(tmp_path / "m")
    assert pipe.default_options.eta == 0.5
    (gen,) = pipe.generate(["a red circle"], seeds=[1], steps=2, sampler="euler",
                           progress=False)
    assert gen.provenance["sampler"] == "euler" and gen.provenance["sampler_options"] == {}
    for bad, message in (({"steps": None}, "'steps' is null"), ({"steps": 5000}, "steps")):
        shutil.rmtree(tmp_path / "m")
        model.extra["defaults"] = bad
        model.save(tmp_path / "m")
        with pytest.raises(CorruptFileError, match=message):
            gambar.load(tmp_path / "m")


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "CMYK"])
def test_inputs_are_normalised_to_rgb_so_their_digest_follows_the_pixels(pipe, mode):
    rgb = Image.new("RGB", (32, 32), (255, 255, 255))
    rgb.paste((10, 200, 30) if mode != "L" and mode != "LA" else (90, 90, 90), (4, 4, 20, 20))
    same = rgb.quantize() if mode == "P" else rgb.convert(mode)  # 2 colours: an exact palette
    if mode in ("RGBA", "LA"):  # opaque: its alpha changes nothing
        assert same.getchannel("A").getextrema() == (255, 255)
    expected = rgb.convert("L").convert("RGB") if mode in ("L", "LA") else rgb
    (a,) = pipe.generate(["a red circle"], seeds=[2], steps=2, inputs={"init": expected},
                         progress=False)
    (b,) = pipe.generate(["a red circle"], seeds=[2], steps=2, inputs={"init": same},
                         progress=False)
    if mode != "CMYK":  # a round trip through CMYK may move a level
        assert a.provenance["inputs"] == b.provenance["inputs"]
        assert np.array_equal(pixels(a), pixels(b))


def test_sixteen_bit_and_mismatched_inputs_are_refused(pipe):
    init = Image.new("RGB", (32, 32), "white")
    with pytest.raises(InvalidInputError, match="16-bit or float"):
        pipe.generate(["a red circle"], seeds=[1], inputs={"init": Image.new("I;16", (8, 8))},
                      progress=False)
    with pytest.raises(InvalidInputError, match="the mask is 16x32 but the init image 32x32"):
        pipe.generate(["a red circle"], seeds=[1], progress=False,
                      inputs={"init": init, "mask": Image.new("L", (16, 32))})
