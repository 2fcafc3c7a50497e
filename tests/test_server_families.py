"""The server knows no family's options by name: a family with no sampler (steps, guidance,
sampler) that takes a layout is served through the REST, OpenAI and A1111 endpoints from its
Options and inputs alone; several frames come back as an animated PNG."""

import base64
import io
import json
from dataclasses import dataclass, make_dataclass
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from helpers_server import (
    BoxesPipeline,
    Instant,
    live_server,
    need,
    png_provenance,
    wait_done,
)

need("fastapi")
httpx = need("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from gambar.inputs import INPUTS, Layout, digest  # noqa: E402
from gambar.options import Options, option  # noqa: E402
from gambar.provenance import read_provenance  # noqa: E402
from gambar.server.app import create_app  # noqa: E402
from gambar.server.compat_openai import ImageGenerationRequest  # noqa: E402
from gambar.server.schemas import job_request_model  # noqa: E402
from gambar.server.service import JobService  # noqa: E402
from gambar.server.settings import ServerSettings  # noqa: E402

LAYOUT = [{"box": [0.0, 0.0, 0.5, 1.0], "phrase": "a red circle"}]
WHITE = (255, 255, 255)


def served():
    return {"boxes": BoxesPipeline(), "clip": BoxesPipeline("clip", frames=3),
            "tiny": Instant()}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(served(), tmp_path_factory.mktemp("results")) as srv:
        yield srv


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def left_and_right(image):
    """The colours of the left half's centre and the right half's centre."""
    w, h = image.size
    return image.getpixel((w // 4, h // 2)), image.getpixel((3 * w // 4, h // 2))


def test_rest_job_with_and_without_a_layout(client):
    r = client.post("/api/jobs", json={"prompt": "a red circle", "model": "boxes", "seed": 5,
                                       "layout": LAYOUT})
    assert r.status_code == 202, r.text
    job = wait_done(client, r.json()["id"])
    assert job["state"] == "done", job["error"]
    s = job["settings"]
    assert (s["size"], s["inputs"], s["model"]) == (16, ["layout"], "boxes")
    assert not {"steps", "guidance", "sampler"} & set(s)
    image, prov = png_provenance(client.get(job["images"][0]["url"]).content)
    assert left_and_right(image) == (BoxesPipeline.colour(5), WHITE)
    assert prov["inputs"] == {"layout": digest(Layout.from_json(LAYOUT))}
    assert (prov["family"], prov["size"], prov["seed"]) == ("boxes", 16, 5)

    r = client.post("/api/jobs", json={"prompt": "a red circle", "model": "boxes", "size": 24})
    job = wait_done(client, r.json()["id"])
    image, prov = png_provenance(client.get(job["images"][0]["url"]).content)
    assert image.size == (24, 24) and left_and_right(image) == (WHITE, WHITE)
    assert "inputs" not in prov and job["settings"]["inputs"] == []


@pytest.mark.parametrize(("body", "words"), [
    ({"model": "boxes", "steps": 4}, "option 'steps' does not apply to boxes (boxes model)"),
    ({"model": "boxes", "guidance": 3}, "its options are: size"),
    ({"model": "boxes", "size": 65}, "size must be between 8 and 64"),  # its own bound
    ({"model": "boxes", "init": "iVBORw0KGgo="}, "takes no 'init' input"),
    ({"model": "tiny", "layout": LAYOUT}, "takes no 'layout' input"),
    ({"model": "boxes", "layout": [{"box": [0, 0, 2, 1]}]}, "box"),
])
def test_options_and_inputs_the_model_lacks_are_a_422_naming_them(client, body, words):
    r = client.post("/api/jobs", json={"prompt": "a red circle", **body})
    assert r.status_code == 422 and words in r.json()["error"], r.text


def test_models_list_each_models_options_and_inputs(client):
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    boxes = models["boxes"]
    assert boxes["family"] == "boxes" and boxes["inputs"] == ["layout"]
    assert boxes["defaults"] == {"size": 16}
    assert boxes["options"] == [{"name": "size", "kind": "int", "default": 16, "low": 8,
                                 "high": 64, "choices": None, "max_chars": None,
                                 "help": "image side in pixels"}]
    tiny = {o["name"]: o for o in models["tiny"]["options"]}
    assert tiny["sampler"]["default"] == "ddim" and tiny["steps"]["default"] == 2


def _branch(prop):
    """The non-null branch of an optional property's schema."""
    return next(b for b in prop["anyOf"] if b.get("type") != "null")


def _request_schema(schema, path):
    """The properties of the JSON body of POST `path` in an OpenAPI document."""
    body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    name = body["schema"]["$ref"].rsplit("/", 1)[1]
    return name, schema["components"]["schemas"][name]


def _assert_documents_served_options(props, skip=()):
    """Each served option (but `skip`) is a property with its help, its widest bounds and
    every family's choices; each served input is one, with its description."""
    for pipe in served().values():
        for spec in pipe.Options.specs():
            if spec.name in skip:
                continue
            branch = _branch(props[spec.name])
            assert spec.help.rstrip(".") in props[spec.name]["description"]
            if spec.low is not None:
                assert branch["minimum"] <= spec.low, spec.name
            if spec.high is not None:
                assert branch["maximum"] >= spec.high, spec.name
            if spec.choices:
                assert set(spec.choices) <= set(branch["enum"]), spec.name
        for name in pipe.inputs:
            assert props[name]["description"].startswith(INPUTS[name]), name
    assert _branch(props["layout"])["type"] == "array"  # [{"phrase": ..., "box": [...]}]
    assert _branch(props["init"])["type"] == "string"
    assert "Only diffusion models" in props["steps"]["description"]


def test_the_openapi_schema_documents_every_served_option_with_its_bounds(client):
    schema = client.get("/openapi.json").json()
    name, request = _request_schema(schema, "/api/jobs")
    assert name == "JobRequest"
    props = request["properties"]
    _assert_documents_served_options(props)
    # The widest bounds of the families that share an option; and which families have it.
    assert (_branch(props["size"])["minimum"], _branch(props["size"])["maximum"]) == (8, 256)
    assert {"prompt", "n", "seed", "model"} <= set(props)


def test_the_openapi_schema_documents_the_openai_extensions(client):
    """The OpenAI body lists the served models' options and inputs beside OpenAI's fields."""
    _, request = _request_schema(client.get("/openapi.json").json(), "/v1/images/generations")
    props = request["properties"]
    # OpenAI's own fields keep their meaning: its size is "WxH", not the size option.
    _assert_documents_served_options(props, skip=ImageGenerationRequest.model_fields)
    assert _branch(props["size"])["type"] == "string" and "WxH" in props["size"]["description"]
    assert {"prompt", "n", "seed", "model", "response_format", "quality"} <= set(props)
    assert request.get("additionalProperties") is True  # other extras still reach the model


def test_openai_without_sampler_options(server):
    openai = need("openai")
    oai = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    res = oai.images.generate(prompt="a red circle", model="boxes", size="32x32",
                              response_format="b64_json",
                              extra_body={"seed": 3, "layout": LAYOUT, "negative_prompt": ""})
    image, prov = png_provenance(base64.b64decode(res.data[0].b64_json))
    assert image.size == (32, 32) and left_and_right(image) == (BoxesPipeline.colour(3), WHITE)
    assert (prov["size"], prov["resized_to"]) == (16, 32)
    assert res.gambar["options"] == {"size": 16} and res.gambar["drawn_at"] == "16x16"
    assert prov["inputs"]["layout"] == digest(Layout.from_json(LAYOUT))
    for extra, words in (({"steps": 4}, "'steps' does not apply to boxes"),
                         ({"negative_prompt": "blue"}, "negative_prompt"),
                         ({"init": "iVBORw0KGgo="}, "takes no 'init' input")):
        with pytest.raises(openai.BadRequestError) as info:
            oai.images.generate(prompt="a red circle", model="boxes", extra_body=extra)
        assert words in str(info.value)


def test_a1111_without_sampler_options(server):
    webuiapi = need("webuiapi")
    host, port = server.url.removeprefix("http://").split(":")
    api = webuiapi.WebUIApi(host=host, port=int(port))
    choose = {"override_settings": {"sd_model_checkpoint": "boxes"}}
    # webuiapi always sends its defaults (steps 20, cfg_scale 7, "Euler a", eta 1): accepted.
    res = api.txt2img(prompt="a red circle", seed=5, width=16, height=16, **choose)
    assert res.image.size == (16, 16) and left_and_right(res.image) == (WHITE, WHITE)
    assert (res.info["steps"], res.info["cfg_scale"], res.info["sampler_name"]) == (
        None, None, None)
    assert res.info["gambar"]["options"] == {"size": 16}
    assert "Steps:" not in res.info["infotexts"][0] and "Seed: 5" in res.info["infotexts"][0]
    # The same fields set to anything else would be silently ignored: refused by name.
    for options, words in (({"cfg_scale": 3}, "cfg_scale=3.0 cannot be honoured: a boxes model "
                            "has no 'guidance' option"),
                           ({"steps": 4}, "steps=4"), ({"sampler_name": "DDIM"}, "DDIM"),
                           ({"negative_prompt": "blue"}, "negative_prompt")):
        with pytest.raises(RuntimeError) as info:
            api.txt2img(prompt="a red circle", **options, **choose)
        status, text = info.value.args
        assert status == 422 and words in text, text


def test_a1111_samplers_come_from_the_models_sampler_choices(tmp_path):
    with TestClient(create_app(JobService({"boxes": BoxesPipeline()},
                                          ServerSettings(results_dir=tmp_path / "a")))) as c:
        assert c.get("/sdapi/v1/samplers").json() == []
    with TestClient(create_app(JobService(served(),
                                          ServerSettings(results_dir=tmp_path / "b")))) as c:
        names = {s["name"]: s["options"]["gambar_sampler"]
                 for s in c.get("/sdapi/v1/samplers").json()}
    assert names["DPM++ 2M"] == "dpmpp" and names["Euler a"] == "ddim"
    sampler = next(s for s in Instant.Options.specs() if s.name == "sampler")
    assert set(names.values()) == set(sampler.choices)


def test_several_frames_are_an_animated_png_whose_provenance_reads_back(client, tmp_path):
    r = client.post("/api/jobs", json={"prompt": "a red circle", "model": "clip", "seed": 2,
                                       "layout": LAYOUT})
    job = wait_done(client, r.json()["id"])
    data = client.get(job["images"][0]["url"]).content
    image, prov = png_provenance(data)
    assert prov == job["images"][0]["provenance"] and prov["model_name"] == "clip"
    clip = Image.open(io.BytesIO(data))
    assert clip.is_animated and clip.n_frames == 3
    colours = []
    for k in range(3):
        clip.seek(k)
        colours.append(left_and_right(clip.convert("RGB"))[0])
    assert colours == [BoxesPipeline.colour(2, k) for k in range(3)]
    (tmp_path / "clip.png").write_bytes(data)
    assert read_provenance(tmp_path / "clip.png") == prov


@dataclass(frozen=True)
class ColourOptions(Options):
    family: ClassVar[str] = "colour"
    colour: str = option("red", choices=("red", "blue"), help="the colour")


class Sizeless:
    """A family without a size option (the compatible APIs size images from it)."""

    family, name, sha256 = "colour", "sizeless", "1" * 64
    Options = ColourOptions
    inputs = frozenset()
    default_options = ColourOptions()

    def check(self, options, inputs):
        pass

    def generate(self, prompts, **kwargs):
        raise AssertionError("not reached")


def test_a_family_without_size_is_refused_by_the_sizing_dialects_only(tmp_path):
    service = JobService({"sizeless": Sizeless()}, ServerSettings(results_dir=tmp_path))
    with TestClient(create_app(service)) as c:
        r = c.post("/v1/images/generations", json={"prompt": "a red circle"})
        assert r.status_code == 400 and "has no 'size' option" in r.json()["error"]["message"]
        r = c.post("/sdapi/v1/txt2img", json={"prompt": "a red circle"})
        assert r.status_code == 422 and "has no 'size' option" in r.json()["error"]
        # Its own options still make a job.
        service.pause()
        r = c.post("/api/jobs", json={"prompt": "a red circle", "colour": "blue"})
        assert r.status_code == 202 and r.json()["settings"]["colour"] == "blue"


@pytest.mark.parametrize("name", ["seed", "output_size", "layout"])
def test_an_option_named_like_a_request_field_is_refused_when_the_app_is_built(name):
    clash = make_dataclass("Clash", [(name, int, option(0, help="clashes with a field"))],
                           bases=(Options,), frozen=True, namespace={"family": "clash"})

    class Pipe(Sizeless):
        family, Options, default_options = "clash", clash, clash()

    with pytest.raises(TypeError, match=f"'{name}' of clash models clashes"):
        job_request_model({"x": Pipe()})


def test_settings_of_a_job_resubmit_as_they_are(client):
    """The page's "New seed" sends a job's settings back (less seed/seeds/output_size)."""
    r = client.post("/api/jobs", json={"prompt": "a red circle", "model": "tiny", "steps": 1,
                                       "guidance": 1.5})
    settings = wait_done(client, r.json()["id"])["settings"]
    again = {k: v for k, v in settings.items() if k not in ("seeds", "output_size", "inputs")}
    r = client.post("/api/jobs", json=again)
    assert r.status_code == 202, r.text
    assert json.dumps(r.json()["settings"]["steps"]) == "1"
    assert np.isclose(r.json()["settings"]["guidance"], 1.5)


def _png_b64(image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


@pytest.mark.parametrize(("body", "message"), [
    ({"model": "tiny", "strength": 0.3}, "strength needs the 'init' input"),
    ({"model": "tiny", "mask": "MASK"}, "a mask needs an init image"),
    ({"model": "boxes", "layout": [{"box": [0, 0, 10**400, 1]}]}, "must satisfy"),
    ({"model": "boxes", "layout": [{"box": [0, 0, 1, 1], "lable": "x"}]},
     "unknown key 'lable'"),
])
def test_what_generate_would_refuse_is_refused_before_queueing(tmp_path, body, message):
    """A job the worker would fail is answered 422 at once: it never takes a queue slot."""
    service = JobService(served(), ServerSettings(results_dir=tmp_path))
    service.pause()
    body = {k: _png_b64(Image.new("L", (8, 8))) if v == "MASK" else v for k, v in body.items()}
    with TestClient(create_app(service)) as c:
        r = c.post("/api/jobs", content=json.dumps({"prompt": "a red circle", **body}),
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and message in r.text, r.text
        assert service.queue_length() == 0
