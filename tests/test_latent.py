"""Latent diffusion (issue 13 item 3): a KL autoencoder that reconstructs gambar's images and
measures its latent scale, and a latent model (UNet over its latents) that draws, edits and
refuses in one line like every family (its contract checks are in test_contract.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import gambar
from gambar import registry
from gambar.errors import InvalidInputError
from gambar.generators.latent.autoencoder import Autoencoder, AutoencoderConfig, psnr
from gambar.train.loop import train
from test_contract import TINY_RECIPES, tiny_autoencoder


@pytest.fixture(scope="module")
def latent(tmp_path_factory):
    recipe = TINY_RECIPES["latent"]()
    recipe["train"]["run_dir"] = str(tmp_path_factory.mktemp("latent") / "run")
    return gambar.load(train(registry.task_factory("latent"), recipe, progress=False))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_the_export_measures_the_latent_scale():
    """Latents of the held-back items, scaled by the stored factor, have unit std."""
    from gambar.generators.latent.autoencoder_task import AutoencoderTask

    ae = Autoencoder.load(tiny_autoencoder())
    recipe = {"data": {"source": "shapes", "size": 32, "seed": 0},
              "autoencoder": {"channels": [16, 16], "groups": 8}}
    images = AutoencoderTask(recipe).held_back()
    with torch.no_grad():
        z = ae.encode(images)
    assert z.shape == (len(images), 4, 16, 16)
    assert abs(float(z.std()) - 1.0) < 1e-3 and ae.cfg.scale != 1.0
    assert "held_back_psnr_db" in ae.extra["training"]


def test_the_latent_model_samples_latents_and_decodes_images(latent):
    assert latent.sample_shape(32) == (4, 16, 16)
    (gen,) = latent.generate(["a red circle"], seeds=[1], steps=2, progress=False)
    assert gen.image.size == (32, 32) and gen.provenance["family"] == "latent"
    with pytest.raises(InvalidInputError, match="multiple of 8") as err:
        latent.generate(["a red circle"], seeds=[1], size=36, progress=False)
    assert "\n" not in str(err.value)


def test_latent_img2img_strength_0_is_the_autoencoders_reconstruction(latent):
    init = Image.new("RGB", (32, 32), "white")
    init.paste((220, 30, 30), (6, 6, 22, 22))
    (gen,) = latent.generate(["a red square"], seeds=[2], steps=4, strength=0.0,
                             inputs={"init": init}, progress=False)
    from gambar.tensors import to_image, to_tensor

    with torch.no_grad():
        recon = latent.autoencoder.decode(latent.autoencoder.encode(to_tensor(init)[None]))
    assert np.abs(pixels(gen.image) - pixels(to_image(recon[0].clamp(-1, 1)))).max() <= 1


def test_an_autoencoder_cannot_draw_from_a_prompt():
    with pytest.raises(InvalidInputError, match="latent model's autoencoder") as err:
        gambar.load(tiny_autoencoder())
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("section", "message"), [
    ({"channels": [16, 24], "groups": 16}, "must divide autoencoder.channels"),
    ({"channels": [16]}, "2 to 4 levels"),
    ({"scale": 0.0}, "autoencoder.scale"),
    ({"channels": [16, 16, 16], "crop": 30}, "multiple of the autoencoder's factor 4"),
])
def test_a_bad_autoencoder_config_is_one_line(section, message):
    with pytest.raises(InvalidInputError, match=message) as err:
        AutoencoderConfig(**{k: tuple(v) if isinstance(v, list) else v
                             for k, v in section.items()})
    assert "\n" not in str(err.value)


def test_random_crops_are_windows_of_each_image_drawn_from_the_generator():
    from gambar.generators.latent.autoencoder import random_crops

    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    crops = random_crops(images, 4, torch.Generator().manual_seed(0))
    assert crops.shape == (2, 3, 4, 4)
    for image, crop in zip(images, crops, strict=True):
        y, x = divmod(int(crop[0, 0, 0]) % 64, 8)  # the values number the pixels
        assert torch.equal(crop, image[:, y:y + 4, x:x + 4])
    again = random_crops(images, 4, torch.Generator().manual_seed(0))
    assert torch.equal(crops, again)
    assert random_crops(images, 0, torch.Generator()) is images  # no crop: whole images
    assert random_crops(images, 8, torch.Generator()) is images


def test_a_latent_recipe_without_an_autoencoder_is_one_line():
    recipe = TINY_RECIPES["latent"]()
    del recipe["latent"]
    with pytest.raises(InvalidInputError, match=r"\[latent\] autoencoder"):
        registry.task_factory("latent")(recipe)


@pytest.mark.slow
def test_the_autoencoder_overfits_a_few_images():
    """Four 32 px renders: after a short fit, reconstructions are far closer than at the
    start (PSNR up by 10 dB and above 24 dB)."""
    from gambar.generators.latent.autoencoder_task import AutoencoderTask

    task = AutoencoderTask({"data": {"source": "shapes", "size": 32, "seed": 0},
                            "autoencoder": {"channels": [16, 32], "groups": 8}})
    images = torch.stack([task._item(i) for i in range(4)])
    model = task.model
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)

    def quality() -> float:
        with torch.no_grad():
            return psnr(model.decode(model.encode(images)), images)

    before = quality()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(300):
        loss, _ = model(images, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = quality()
    assert after > before + 10 and after > 24, (before, after)


def test_a1111_img2img_and_inpainting_draw_with_the_latent_model(latent, tmp_path):
    """The real webuiapi client against a server holding the latent model: img2img equals the
    library's draw, and inpainting carries both inputs' digests in the provenance."""
    from helpers_server import live_server, need, png_provenance

    webuiapi = need("webuiapi")
    import base64

    init = latent.generate(["a red circle"], seeds=[4], steps=2, progress=False)[0].image
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (16, 0, 32, 32))
    with live_server({latent.name: latent}, tmp_path) as server:
        host, port = server.url.removeprefix("http://").split(":")
        api = webuiapi.WebUIApi(host=host, port=int(port))
        res = api.img2img(images=[init], prompt="three blue stars", denoising_strength=0.5,
                          seed=7, steps=4, width=32, height=32)
        inpainted = api.img2img(images=[init], mask_image=mask, mask_blur=0,
                                inpaint_full_res=False, prompt="three blue stars",
                                denoising_strength=1.0, seed=8, steps=4, width=32, height=32)
    direct = latent.generate(["three blue stars"], seeds=[7], steps=4, guidance=7.0,
                             sampler="ddim", eta=1.0, strength=0.5, inputs={"init": init},
                             progress=False)[0]
    assert np.abs(pixels(res.image) - pixels(direct.image)).max() <= 1  # the server's 1/255
    _, prov = png_provenance(base64.b64decode(inpainted.json["images"][0]))
    assert prov["family"] == "latent" and set(prov["inputs"]) == {"init", "mask"}
    assert prov["inputs"] == inpainted.info["gambar"]["inputs"]  # the prepared inputs' digests
