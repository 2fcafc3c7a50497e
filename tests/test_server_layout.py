"""A grounded model served (issue 18 item 3: a layout "the same in the Python API, the REST API
and the page"): a layout given to POST /api/jobs, to the OpenAI route as its extension, or
picked on the page is drawn and recorded as the Python API draws and records it; without one
the layout stage's sampled layout is; a bad layout is a one-line 422 (400 for OpenAI) before
anything is queued."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gambar
from gambar import registry
from gambar.inputs import MAX_LAYOUT_OBJECTS, MAX_PHRASE_CHARS, Layout, digest
from gambar.train.loop import train
from helpers_server import live_server, need, png_provenance, served_models, wait_done  # noqa: F401
from test_browser import browser, fetch_in_page, wait_for  # noqa: F401
from test_contract import FAST, TINY_RECIPES

need("fastapi")
httpx = need("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from gambar.server.app import create_app  # noqa: E402
from gambar.server.service import JobService  # noqa: E402
from gambar.server.settings import ServerSettings  # noqa: E402

STEPS = FAST["grounded"]["steps"]
PROMPT = "a red circle above a blue square"
GIVEN = [{"phrase": "a red circle", "box": [0.2, 0.05, 0.6, 0.45]},
         {"phrase": "a blue square", "box": [0.3, 0.55, 0.7, 0.95]}]
BOX = [0.1, 0.1, 0.5, 0.5]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    recipe = TINY_RECIPES["grounded"]()
    recipe["train"]["run_dir"] = str(tmp_path_factory.mktemp("grounded") / "run")
    return train(registry.task_factory("grounded"), recipe, progress=False)


@pytest.fixture(scope="module")
def pipe(model_dir):
    return gambar.load(model_dir)


@pytest.fixture(scope="module")
def server(pipe, tmp_path_factory):
    with live_server({"grounded": pipe}, tmp_path_factory.mktemp("results")) as srv:
        yield srv


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def direct(pipe, seed: int, layout: list | None = None, **options):
    """The Python API's image for PROMPT and `seed` (with `layout` given, if any)."""
    inputs = {"layout": Layout.from_json(layout)} if layout is not None else None
    (gen,) = pipe.generate([PROMPT], seeds=[seed], inputs=inputs, progress=False, steps=STEPS,
                           **options)
    return gen


def rest_image(client, **body) -> tuple[Image.Image, dict, dict]:
    """(image, its PNG's provenance, the finished job) of one POST /api/jobs."""
    r = client.post("/api/jobs", json={"prompt": PROMPT, "steps": STEPS, **body})
    assert r.status_code == 202, r.text
    job = wait_done(client, r.json()["id"], timeout=120)
    assert job["state"] == "done", job["error"]
    image, prov = png_provenance(client.get(job["images"][0]["url"]).content)
    assert prov == job["images"][0]["provenance"]  # the job's answer is the file's own
    return image, prov, job


# ---------------------------------------------------------------------------------------------
# REST

def test_a_layout_in_the_body_is_drawn_as_the_python_api_draws_it(pipe, client):
    image, prov, job = rest_image(client, seed=4, layout=GIVEN)
    assert prov["layout"] == GIVEN and prov["layout_source"] == "given"
    assert prov["inputs"] == {"layout": digest(Layout.from_json(GIVEN))}
    assert job["settings"]["inputs"] == ["layout"]
    want = direct(pipe, 4, GIVEN)
    assert want.provenance["layout"] == GIVEN
    assert np.array_equal(pixels(image), pixels(want.image))


def test_without_a_layout_the_sampled_one_is_recorded_and_replays(pipe, client):
    image, prov, job = rest_image(client, seed=6)
    want = direct(pipe, 6)
    assert prov["layout_source"] == "sampled" and "inputs" not in prov
    assert prov["layout"] == want.provenance["layout"] == pipe.plan(PROMPT, 6, 1.0).to_json()
    assert prov["layout"] and job["settings"]["inputs"] == []
    assert np.array_equal(pixels(image), pixels(want.image))
    # The recorded layout sent back as given: the very same pixels (its numbers survive JSON).
    again, prov_again, _ = rest_image(client, seed=6, layout=prov["layout"])
    assert prov_again["layout"] == prov["layout"] and prov_again["layout_source"] == "given"
    assert np.array_equal(pixels(again), pixels(image))


def test_the_layout_stage_option_travels_with_the_request(pipe, client):
    _, prov, job = rest_image(client, seed=3, layout_temperature=0.0)
    assert job["settings"]["layout_temperature"] == 0.0 == prov["layout_temperature"]
    assert prov["layout"] == pipe.plan(PROMPT, 3, 0.0).to_json()


def test_models_list_the_layout_input_and_the_layout_stage_option(client):
    (model,) = client.get("/api/models").json()["models"]
    assert model["family"] == "grounded" and model["inputs"] == ["init", "layout", "mask"]
    spec = next(o for o in model["options"] if o["name"] == "layout_temperature")
    assert (spec["kind"], spec["default"], spec["low"], spec["high"]) == ("float", 1.0, 0.0, 2.0)


BAD_LAYOUTS = [
    ([{"phrase": "a red circle", "box": [0.5, 0.5, 1.5, 1.0]}],
     "object 0: box [0.5, 0.5, 1.5, 1.0] must satisfy 0 <= x0 < x1 <= 1"),
    ([{"phrase": "a red circle", "box": BOX}, {"phrase": "x", "box": [-0.1, 0.0, 0.5, 0.5]}],
     "object 1: box [-0.1, 0.0, 0.5, 0.5] must satisfy"),
    ([{"phrase": "a red circle", "box": [0.6, 0.1, 0.2, 0.5]}], "must satisfy"),  # x1 < x0
    ([{"phrase": "a red circle", "box": BOX, "colour": "red"}], "unknown key 'colour'"),
    ([{"phrase": "a red circle", "bxo": BOX}], "unknown key 'bxo'; did you mean 'box'?"),
    ([{"phrase": "x", "box": BOX}] * (MAX_LAYOUT_OBJECTS + 1),
     f"must hold 1 to {MAX_LAYOUT_OBJECTS} objects, not {MAX_LAYOUT_OBJECTS + 1}"),
    ([{"phrase": "a red circle", "box": [0.1, 0.1, 0.5]}], "'box' must be four numbers"),
    ([{"phrase": "x" * (MAX_PHRASE_CHARS + 1), "box": BOX}],
     f"'phrase' must be text of at most {MAX_PHRASE_CHARS} characters"),
    ({"phrase": "a red circle", "box": BOX}, "layout"),  # not a list: the body's type refuses it
]


@pytest.fixture(scope="module")
def paused(pipe, tmp_path_factory):
    """A second app over the same model whose queue never runs: what reaches it stays there."""
    service = JobService({"grounded": pipe},
                         ServerSettings(results_dir=tmp_path_factory.mktemp("paused")))
    service.pause()
    with TestClient(create_app(service)) as c:
        yield c, service


@pytest.mark.parametrize(("layout", "words"), BAD_LAYOUTS)
def test_a_bad_layout_is_a_one_line_422_before_queueing(paused, layout, words):
    c, service = paused
    r = c.post("/api/jobs", json={"prompt": PROMPT, "seed": 1, "layout": layout})
    error = r.json()["error"]
    assert r.status_code == 422 and words in error, r.text
    assert "\n" not in error and "layout" in error  # names the input it is about
    assert service.queue_length() == 0


# ---------------------------------------------------------------------------------------------
# OpenAI: the layout is an extension field (extra_body), like seed and the model's options

def test_openai_takes_the_layout_as_its_extension(pipe, server):
    openai = need("openai")
    oai = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)
    res = oai.images.generate(prompt=PROMPT, response_format="b64_json",
                              extra_body={"seed": 4, "steps": STEPS, "layout": GIVEN})
    image, prov = png_provenance(base64.b64decode(res.data[0].b64_json))
    assert prov["layout"] == GIVEN and prov["layout_source"] == "given"
    assert np.array_equal(pixels(image), pixels(direct(pipe, 4, GIVEN).image))
    assert res.gambar["model"] == "grounded" and res.gambar["seeds"] == [4]

    res = oai.images.generate(prompt=PROMPT, response_format="b64_json",
                              extra_body={"seed": 6, "steps": STEPS})
    image, prov = png_provenance(base64.b64decode(res.data[0].b64_json))
    assert prov["layout_source"] == "sampled"
    assert np.array_equal(pixels(image), pixels(direct(pipe, 6).image))

    for layout, words in (BAD_LAYOUTS[0], BAD_LAYOUTS[3], BAD_LAYOUTS[5]):
        with pytest.raises(openai.BadRequestError) as info:
            oai.images.generate(prompt=PROMPT, extra_body={"layout": layout})
        assert words in str(info.value)


def test_the_openai_schema_documents_the_layout_extension(client):
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/images/generations"]["post"]["requestBody"]
    name = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    prop = schema["components"]["schemas"][name]["properties"]["layout"]
    assert "Taken by grounded models" in prop["description"]
    assert any(b.get("type") == "array" for b in prop["anyOf"])


# ---------------------------------------------------------------------------------------------
# The page: a layout picker for the grounded model, drawn and recorded as above

@pytest.mark.slow
def test_the_page_gives_a_grounded_model_a_layout(browser, pipe, served_models,  # noqa: F811
                                                  tmp_path):
    driver = browser
    models = {"grounded": pipe, **served_models}
    with live_server(models, tmp_path / "results") as srv:
        driver.get(srv.url + "/")
        wait_for(driver, "document.querySelectorAll('#model option').length === 2",
                 message="models")

        def pickers():
            return driver.execute_script("return [...document.querySelectorAll("
                                         "'#input-options input[type=file]')].map(e => e.id)")

        def cards():
            return driver.find_elements("css selector", ".card")

        def newest(count):
            wait_for(driver, f"document.querySelectorAll('.card img').length === {count} && "
                     "document.querySelector('.card img').naturalWidth > 0",
                     timeout=120, message=f"card {count}")
            src = cards()[0].find_element("tag name", "img").get_attribute("src")
            return png_provenance(fetch_in_page(driver, src))

        def fill(**fields):
            for field, value in fields.items():
                driver.find_element("id", field).clear()
                driver.find_element("id", field).send_keys(value)

        driver.find_element("css selector", "#more summary").click()
        assert driver.find_element("id", "model").get_attribute("value") == "grounded"
        assert pickers() == ["init", "layout", "mask"]
        assert driver.find_element("id", "layout_temperature").get_attribute("max") == "2"
        assert "phrase" in driver.find_element(
            "css selector", "[data-input=layout] label").get_attribute("title")

        # A layout file: drawn and recorded as the Python API draws and records it.
        layout = tmp_path / "boxes.json"
        layout.write_text(json.dumps(GIVEN))
        driver.find_element("id", "layout").send_keys(str(layout))
        wait_for(driver, "document.querySelector('[data-input=layout] .input-note')"
                 ".textContent === 'boxes.json: 2 boxes'", message="the chosen layout")
        driver.find_element("id", "prompt").send_keys(PROMPT)
        fill(seed="4", steps=str(STEPS))
        driver.find_element("id", "generate").click()
        image, prov = newest(1)
        assert prov["layout"] == GIVEN and prov["layout_source"] == "given"
        assert np.array_equal(pixels(image), pixels(direct(pipe, 4, GIVEN).image))
        assert "with layout" in cards()[0].find_element("css selector", ".meta").text

        # A layout the server refuses: its one line on the page, nothing drawn.
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps([{"phrase": "a red circle", "box": [0.5, 0.5, 1.5, 1.0]}]))
        driver.find_element("id", "layout").send_keys(str(bad))
        wait_for(driver, "document.querySelector('[data-input=layout] .input-note')"
                 ".textContent === 'bad.json: 1 box'", message="the bad layout")
        driver.find_element("id", "generate").click()
        refusal = wait_for(driver, "!document.getElementById('form-error').hidden && "
                           "document.getElementById('form-error').textContent",
                           message="the refusal")
        assert "must satisfy 0 <= x0 < x1 <= 1" in refusal and len(cards()) == 1

        # Removed: the layout stage samples one, as it does for the Python API.
        driver.find_element("css selector", "[data-input=layout] .clear").click()
        driver.find_element("id", "generate").click()
        image, prov = newest(2)
        assert prov["layout_source"] == "sampled"
        assert np.array_equal(pixels(image), pixels(direct(pipe, 4).image))

        # A model without a layout input has no layout picker.
        driver.execute_script("const s = document.getElementById('model'); s.value = 'tiny';"
                              "s.dispatchEvent(new Event('change'));")
        assert pickers() == ["init", "mask"]
