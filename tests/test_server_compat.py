"""The OpenAI and AUTOMATIC1111 dialects, driven by the real clients from PyPI."""

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image

from gambar.inputs import digest, normalize
from helpers_server import live_server, need, png_provenance, served_models  # noqa: F401

need("fastapi")
httpx = need("httpx")
openai = need("openai")
webuiapi = need("webuiapi")

TOKEN = "t0ken"


@pytest.fixture(scope="module")
def server(served_models, tmp_path_factory):  # noqa: F811
    with live_server(served_models, tmp_path_factory.mktemp("results"),
                     tokens=(TOKEN,)) as srv:
        yield srv


@pytest.fixture
def oai(server):
    # max_retries=0: a refused request must surface, not be retried.
    return openai.OpenAI(base_url=server.url + "/v1", api_key=TOKEN, max_retries=0)


@pytest.fixture
def a1111(server):
    host, port = server.url.removeprefix("http://").split(":")
    api = webuiapi.WebUIApi(host=host, port=int(port))
    api.set_auth("anyone", TOKEN)  # A1111's --api-auth is HTTP Basic: the token is the password
    return api


# ---- OpenAI -----------------------------------------------------------------------------
def test_openai_b64_json_at_native_size(oai, served_models):  # noqa: F811
    res = oai.images.generate(prompt="a red circle", n=2, size="32x32", model="tiny",
                              response_format="b64_json", extra_body={"seed": 11, "steps": 3})
    assert len(res.data) == 2 and res.size == "32x32" and res.output_format == "png"
    image, prov = png_provenance(base64.b64decode(res.data[1].b64_json))
    assert image.size == (32, 32) and prov["seed"] == 12 and prov["steps"] == 3
    assert res.gambar["resize"] == "none" and res.gambar["seeds"] == [11, 12]
    direct = served_models["tiny"].generate(["a red circle"], seeds=[12], steps=3,
                                            progress=False)[0]
    # Image 2 of a batch of 2 against the image drawn alone: the guarantee is 1/255 per pixel
    # (README, "Seeds are per image"); under full-suite load a level flipped once in a few runs.
    diff = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(direct.image, dtype=np.int16))
    assert diff.max() <= 1, diff.max()


def test_openai_larger_size_is_resized_and_says_so(oai):
    res = oai.images.generate(prompt="three blue stars", size="256x256",
                              response_format="b64_json", user="someone", style="vivid",
                              quality="standard", extra_body={"steps": 2})
    image, prov = png_provenance(base64.b64decode(res.data[0].b64_json))
    assert image.size == (256, 256) and prov["size"] == 32 and prov["resized_to"] == 256
    assert res.gambar["drawn_at"] == "32x32" and res.gambar["resized_to"] == "256x256"
    assert "lanczos" in res.gambar["resize"] and "lanczos" in prov["resize"]


def test_openai_url_is_served_by_gambar_and_signed(oai, server):
    res = oai.images.generate(prompt="a red circle", extra_body={"steps": 2})
    url = res.data[0].url
    assert url.startswith(server.url + "/api/jobs/") and "sig=" in url
    # The URL opens without a token (it is signed), like OpenAI's; unsigned it needs one.
    r = httpx.get(url)
    assert r.status_code == 200 and png_provenance(r.content)[1]["prompt"] == "a red circle"
    assert httpx.get(url.split("?")[0]).status_code == 401
    assert httpx.get(url[:-4] + "0000").status_code == 401


@pytest.mark.parametrize(("options", "words"), [
    ({"size": "1792x1024"}, "not square"),
    ({"size": "2048x2048"}, "between 1 and 1024"),
    ({"size": "big"}, "512x512"),
    ({"quality": "hd"}, "quality"),
    ({"style": "natural"}, "style"),
    ({"background": "transparent"}, "background"),
    ({"output_format": "jpeg"}, "output_format"),
    ({"model": "dall-e-3"}, "dall-e-3"),
    ({"n": 17}, "n"),
    ({"extra_body": {"complexity": "high"}}, "complexity"),
])
def test_openai_refuses_what_it_cannot_honour(oai, options, words):
    with pytest.raises(openai.BadRequestError) as info:
        oai.images.generate(prompt="a red circle", **options)
    assert words in str(info.value)


def test_openai_needs_the_token(server):
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.images.generate(prompt="a red circle")
    models = openai.OpenAI(base_url=server.url + "/v1", api_key=TOKEN).models.list()
    assert [m.id for m in models.data] == ["tiny"]


# ---- AUTOMATIC1111 ----------------------------------------------------------------------
def test_a1111_txt2img_with_the_clients_defaults(a1111):
    # webuiapi sends its defaults: 512x512, "Euler a", cfg 7, eta 1, enable_hr false,
    # denoising_strength 0.7, hr_* fields, empty styles/scripts ...
    res = a1111.txt2img(prompt="a red circle", negative_prompt="blue", seed=5, steps=3,
                        batch_size=2)
    assert [im.size for im in res.images] == [(512, 512), (512, 512)]
    assert res.info["all_seeds"] == [5, 6] and res.info["sampler_name"] == "Euler a"
    assert res.info["cfg_scale"] == 7.0 and res.info["width"] == 512
    g = res.info["gambar"]
    assert (g["options"]["sampler"], g["options"]["eta"], g["options"]["steps"]) == (
        "ddim", 1.0, 3)
    assert g["drawn_at"] == "32x32" and g["resized_to"] == "512x512"
    assert "Steps: 3, Sampler: Euler a" in res.info["infotexts"][0]
    raw = base64.b64decode(res.json["images"][1])
    _, prov = png_provenance(raw)
    assert (prov["seed"], prov["negative_prompt"], prov["guidance"]) == (6, "blue", 7.0)


def test_a1111_native_size_and_seed_reproduce(a1111):
    one = a1111.txt2img(prompt="dua bintang biru", seed=9, steps=2, width=32, height=32,
                        sampler_name="DPM++ 2M", cfg_scale=3)
    two = a1111.txt2img(prompt="dua bintang biru", seed=9, steps=2, width=32, height=32,
                        sampler_name="DPM++ 2M", cfg_scale=3)
    assert one.image.size == (32, 32) and one.info["gambar"]["resize"] == "none"
    assert np.array_equal(np.asarray(one.image), np.asarray(two.image))
    # webuiapi's eta 1 is inert for DPM++ (as in A1111): not passed on.
    assert (one.info["gambar"]["options"]["sampler"], one.info["gambar"]["options"]["eta"]) == (
        "dpmpp", 0.0)


@pytest.mark.parametrize(("options", "words"), [
    ({"enable_hr": True}, "enable_hr"),
    ({"restore_faces": True}, "restore_faces"),
    ({"styles": ["cinematic"]}, "styles"),
    ({"sampler_name": "DPM++ 2M Karras"}, "Karras"),
    ({"sampler_name": "LMS"}, "unknown sampler"),
    ({"width": 512, "height": 768}, "not square"),
    ({"subseed_strength": 0.5}, "subseed_strength"),
    ({"override_settings": {"sd_vae": "x"}}, "sd_vae"),
    ({"override_settings": {"sd_model_checkpoint": "sdxl"}}, "sdxl"),
    ({"batch_size": 10, "n_iter": 2}, "n must be"),
])
def test_a1111_refuses_what_it_cannot_honour(a1111, options, words):
    with pytest.raises(RuntimeError) as info:
        a1111.txt2img(prompt="a red circle", steps=2, **options)
    status, text = info.value.args
    assert status == 422 and words in text


def test_a1111_model_list_and_choice(a1111):
    (model,) = a1111.get_sd_models()
    assert model["model_name"] == "tiny" and model["title"].startswith("tiny [")
    res = a1111.txt2img(prompt="a red circle", steps=2, width=32, height=32,
                        override_settings={"sd_model_checkpoint": model["title"]})
    assert res.info["sd_model_name"] == "tiny" and res.image.size == (32, 32)
    assert {s["name"] for s in a1111.get_samplers()} >= {"Euler a", "DPM++ 2M", "DDIM"}
    assert a1111.get_options()["sd_model_checkpoint"] == model["title"]


def test_a1111_ancestral_euler_equals_ddim_with_eta_one(a1111, served_models):  # noqa: F811
    res = a1111.txt2img(prompt="a red circle", seed=3, steps=4, width=32, height=32, cfg_scale=2,
                        sampler_name="Euler a")
    direct = served_models["tiny"].generate(["a red circle"], seeds=[3], steps=4, guidance=2,
                                            sampler="ddim", eta=1.0, progress=False)[0]
    assert np.array_equal(np.asarray(res.image.convert("RGB")), np.asarray(direct.image))


def test_a1111_without_the_token_is_refused(server):
    host, port = server.url.removeprefix("http://").split(":")
    api = webuiapi.WebUIApi(host=host, port=int(port))
    with pytest.raises(RuntimeError) as info:
        api.txt2img(prompt="a red circle", steps=2)
    assert info.value.args[0] == 401


def test_a1111_progress_and_interrupt(server):
    auth = {"Authorization": f"Bearer {TOKEN}", "X-Client-Id": "ignored-with-a-token"}
    with httpx.Client(base_url=server.url, headers=auth) as c:
        assert c.get("/sdapi/v1/progress").json()["state"]["job_count"] == 0
        job = c.post("/api/jobs", json={"prompt": "a red circle", "steps": 150}).json()
        deadline = time.monotonic() + 30
        while (p := c.get("/sdapi/v1/progress").json())["progress"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert p["state"]["job"] == job["id"] and p["state"]["sampling_steps"] == 150
        assert c.post("/sdapi/v1/interrupt").status_code == 200
        while (s := c.get(f"/api/jobs/{job['id']}").json())["state"] == "running":
            time.sleep(0.01)
        assert s["state"] == "cancelled"
        assert [x["name"] for x in c.get("/sdapi/v1/schedulers").json()] == ["automatic"]
        assert c.get("/sdapi/v1/scripts").json() == {"txt2img": [], "img2img": []}


# ---- AUTOMATIC1111 img2img --------------------------------------------------------------
def _a1111_init(served_models, seed=21):  # noqa: F811
    """A 32x32 (the tiny model's own size) image to start from: nothing resizes it."""
    return served_models["tiny"].generate(["a red circle"], seeds=[seed], steps=3,
                                          progress=False)[0].image


def _right_half(size=(32, 32)):
    mask = Image.new("L", size, 0)
    mask.paste(255, (size[0] // 2, 0, *size))
    return mask


def _rgb(image):
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_a1111_img2img_draws_what_the_pipeline_draws(a1111, served_models):  # noqa: F811
    init = _a1111_init(served_models)
    # webuiapi's defaults: "Euler a" (ddim, eta 1), cfg 7, resize_mode 0, mask_blur 4 ...
    res = a1111.img2img(images=[init], prompt="three blue stars", denoising_strength=0.5,
                        seed=7, steps=4, width=32, height=32)
    assert res.image.size == (32, 32) and res.info["denoising_strength"] == 0.5
    assert "Denoising strength: 0.5" in res.info["infotexts"][0]
    direct = served_models["tiny"].generate(["three blue stars"], seeds=[7], steps=4,
                                            guidance=7.0, sampler="ddim", eta=1.0, strength=0.5,
                                            inputs={"init": init}, progress=False)[0]
    assert np.array_equal(_rgb(res.image), _rgb(direct.image))
    _, prov = png_provenance(base64.b64decode(res.json["images"][0]))
    assert prov["strength"] == 0.5 and prov["inputs"] == {"init": digest(init)}
    assert res.info["gambar"]["inputs"] == {"init": digest(init)}
    assert res.parameters["init_images"] is None  # echoed only with include_init_images
    # The client's default 512x512 is drawn at 32 and resized, as txt2img does.
    big = a1111.img2img(images=[init], prompt="three blue stars", seed=7, steps=2)
    assert big.image.size == (512, 512) and big.info["gambar"]["resized_to"] == "512x512"


def test_a1111_img2img_strength_zero_is_the_init_image_and_one_ignores_it(
        a1111, served_models):  # noqa: F811
    from gambar.generators.diffusion.pipeline import _from_image
    from gambar.tensors import to_image

    init = _a1111_init(served_models)
    kept = a1111.img2img(images=[init], prompt="three blue stars", denoising_strength=0.0,
                         seed=3, steps=4, width=32, height=32)
    assert np.array_equal(_rgb(kept.image), _rgb(init))
    # Not square, cropped (resize_mode 1): the init image as the model reads it.
    wide = Image.effect_noise((48, 40), 60).convert("RGB")
    cropped = a1111.img2img(images=[wide], prompt="a red circle", denoising_strength=0.0,
                            resize_mode=1, seed=3, steps=4, width=32, height=32)
    assert np.array_equal(_rgb(cropped.image), _rgb(to_image(_from_image(wide, 32, "RGB"))))
    redrawn = a1111.img2img(images=[init], prompt="three blue stars", denoising_strength=1.0,
                            seed=3, steps=4, width=32, height=32)
    plain = a1111.txt2img(prompt="three blue stars", seed=3, steps=4, width=32, height=32)
    assert np.array_equal(_rgb(redrawn.image), _rgb(plain.image))


def test_a1111_inpainting_keeps_the_pixels_outside_the_mask(a1111, served_models):  # noqa: F811
    init, mask = _a1111_init(served_models), _right_half()
    res = a1111.img2img(images=[init], mask_image=mask, prompt="three blue stars",
                        denoising_strength=1.0, seed=8, steps=4, width=32, height=32,
                        inpaint_full_res=False, mask_blur=0)
    out, base = _rgb(res.image), _rgb(init)
    assert np.abs(out[:, :16] - base[:, :16]).max() <= 2  # within 2/255 outside the mask
    assert np.abs(out[:, 16:] - base[:, 16:]).max() > 10  # redrawn inside
    assert set(res.info["gambar"]["inputs"]) == {"init", "mask"}
    assert "Mask blur: 0" in res.info["infotexts"][0]
    # A1111's default blur and fill: pixels beyond the blur's reach are kept all the same,
    # and the prepared inputs the model drew from come back (their digests in provenance).
    soft = a1111.img2img(images=[init], mask_image=mask, prompt="three blue stars",
                         denoising_strength=0.6, seed=8, steps=4, width=32, height=32,
                         inpaint_full_res=False)
    assert np.abs(_rgb(soft.image)[:, :2] - base[:, :2]).max() <= 2
    prepared = soft.info["gambar"]["prepared_inputs"]
    _, prov = png_provenance(base64.b64decode(soft.json["images"][0]))
    assert prov["inputs"] == {
        name: digest(normalize(name, Image.open(io.BytesIO(base64.b64decode(b)))))
        for name, b in prepared.items()}
    # inpainting_mask_invert swaps what is kept: now the right half stays.
    flipped = a1111.img2img(images=[init], mask_image=mask, prompt="three blue stars",
                            denoising_strength=1.0, seed=8, steps=4, width=32, height=32,
                            inpaint_full_res=False, mask_blur=0, inpainting_mask_invert=1)
    assert np.abs(_rgb(flipped.image)[:, 16:] - base[:, 16:]).max() <= 2


def _png_b64(image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


@pytest.mark.parametrize(("change", "words"), [
    ({"init_images": ["not base64!"]}, "init_images[0] is not valid base64"),
    ({"init_images": [base64.b64encode(b"hello").decode()]}, "init_images[0]: not an image"),
    ({"init_images": []}, "init_images holds 0 images"),
    ({"init_images": ["A", "B"]}, "init_images holds 2 images"),
    ({"mask": "small"}, "the mask is 16x16 but init_images[0] 32x32"),
    ({"mask": "half", "inpaint_full_res": True}, "inpaint_full_res"),  # "Only masked"
    ({"mask": "half", "inpainting_fill": 2}, "inpainting_fill"),
    ({"denoising_strength": 1.5}, "denoising_strength"),
    ({"denoising_strength": -0.1}, "denoising_strength"),
    ({"init_images": ["wide"], "resize_mode": 2}, "resize_mode=2"),
    ({"initial_noise_multiplier": 0.5}, "initial_noise_multiplier"),
    ({"enable_hr": True}, "enable_hr"),
])
def test_a1111_img2img_refuses_bad_input_in_one_line(server, served_models,  # noqa: F811
                                                     change, words):
    images = {"init": _a1111_init(served_models), "small": Image.new("L", (16, 16), 255),
              "half": _right_half(), "wide": Image.new("RGB", (48, 40), "red")}
    body = {"prompt": "a red circle", "steps": 2, "init_images": ["init"],
            "inpaint_full_res": False, **change}
    body["init_images"] = [_png_b64(images[i]) if i in images else i
                           for i in body["init_images"]]
    if "mask" in body:
        body["mask"] = _png_b64(images[body["mask"]])
    r = httpx.post(server.url + "/sdapi/v1/img2img", json=body,
                   headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert words in error and "\n" not in error


def test_a1111_img2img_takes_a_data_url_and_echoes_inputs_when_asked(
        server, served_models):  # noqa: F811
    init = _a1111_init(served_models)
    body = {"prompt": "a red circle", "steps": 2, "seed": 4, "denoising_strength": 0.0,
            "init_images": ["data:image/png;base64," + _png_b64(init)],
            "include_init_images": True, "width": 32, "height": 32}
    r = httpx.post(server.url + "/sdapi/v1/img2img", json=body,
                   headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert r.status_code == 200, r.text
    image, _ = png_provenance(base64.b64decode(r.json()["images"][0]))
    assert np.array_equal(_rgb(image), _rgb(init))
    assert r.json()["parameters"]["init_images"] == body["init_images"]


def test_a1111_inpainting_replays_from_the_prepared_inputs(a1111, tiny_model_dir, tmp_path):
    from gambar.cli import main

    init = Image.effect_noise((40, 40), 60).convert("RGB")  # cropped and resized to 32
    mask = _right_half((40, 40))
    res = a1111.img2img(images=[init], mask_image=mask, prompt="a red circle", seed=5, steps=3,
                        denoising_strength=0.6, width=32, height=32, inpaint_full_res=False)
    (tmp_path / "out.png").write_bytes(base64.b64decode(res.json["images"][0]))
    for name, data in res.info["gambar"]["prepared_inputs"].items():
        (tmp_path / f"{name}.png").write_bytes(base64.b64decode(data))
    assert main(["generate", "--model", str(tiny_model_dir), "--replay", str(tmp_path / "out.png"),
                 "--init", str(tmp_path / "init.png"), "--mask", str(tmp_path / "mask.png"),
                 "-o", str(tmp_path / "again.png"), "-q"]) == 0
    assert np.array_equal(_rgb(Image.open(tmp_path / "again.png")), _rgb(res.image))
