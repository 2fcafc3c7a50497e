"""Bad request bodies get a one-line 4xx, never a 500: the issue's reproductions, and a seeded
fuzz over every endpoint's body (wrong types, huge numbers, NaN/Infinity, unicode digits,
nesting, unknown fields)."""

import json
import string

import pytest

from helpers_server import BoxesPipeline, Instant, need, served_models  # noqa: F401

need("fastapi")
need("httpx")
hypothesis = need("hypothesis")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gambar.server.app import create_app  # noqa: E402
from gambar.server.compat_a1111 import INERT, Txt2ImgRequest  # noqa: E402
from gambar.server.compat_openai import ImageGenerationRequest  # noqa: E402
from gambar.server.schemas import job_request_model  # noqa: E402
from gambar.server.service import JobService  # noqa: E402
from gambar.server.settings import ServerSettings  # noqa: E402

OPENAI, A1111, API = "/v1/images/generations", "/sdapi/v1/txt2img", "/api/jobs"


def serve(pipelines, results, **options):
    """The app under Starlette's TestClient (in-process, workers running); 500s come back."""
    app = create_app(JobService(pipelines, ServerSettings(results_dir=results, **options)))
    return TestClient(app, raise_server_exceptions=False)


def error_of(r):
    """The one-line message of an error response in any dialect."""
    body = r.json()
    error = body["error"]
    return error["message"] if isinstance(error, dict) else error


def post(c, path, body):
    """POST `body` as JSON; a str is sent as it is (NaN, deep nesting, broken JSON)."""
    content = body if isinstance(body, str) else json.dumps(body)
    return c.post(path, content=content, headers={"content-type": "application/json"})


@pytest.fixture(scope="module")
def client(served_models, tmp_path_factory):  # noqa: F811
    with serve(served_models, tmp_path_factory.mktemp("results")) as c:
        yield c


DEEP = "[" * 900 + "1" + "]" * 900  # under Python's recursion limit for parsing, not for more
PROMPT = '"prompt": "a red circle", "steps": 1'


@pytest.mark.parametrize(("path", "body", "status", "words"), [
    # The issue: str.isdigit() accepts superscripts, int() does not -> 500.
    (OPENAI, {"prompt": "a red circle", "size": "²x²"}, 400, "512x512"),
    (OPENAI, {"prompt": "a red circle", "size": "１x１"}, 400, "512x512"),  # fullwidth digits
    (OPENAI, {"prompt": "a red circle", "size": "9" * 5000 + "x1"}, 400, "512x512"),
    # The issue: a model name that is not a string -> AttributeError -> 500.
    (A1111, {"prompt": "a", "override_settings": {"sd_model_checkpoint": 5}}, 422, "string"),
    (A1111, {"prompt": "a", "override_settings": {"sd_model_checkpoint": ["x"]}}, 422,
     "string"),
    (A1111, {"prompt": "a", "override_settings": {"sd_model_checkpoint": {"a": 1}}}, 422,
     "string"),
    # NaN and Infinity are refused by name rather than by a confusing range message.
    (API, '{"prompt": "a", "guidance": NaN}', 422, "finite"),
    (A1111, '{"prompt": "a", "cfg_scale": Infinity}', 422, "finite"),
    (A1111, '{"prompt": "a", "sampler_name": "DDIM", "eta": NaN}', 422, "finite"),
    (OPENAI, '{"prompt": "a", "guidance": -Infinity}', 400, "finite"),
    # A value shown in a message is cut short, however deep or long it is.
    (A1111, '{"prompt": "a", "script_args": ' + DEEP + "}", 422, "script_args"),
    (A1111, {"prompt": "a", "styles": ["x" * 100_000]}, 422, "styles"),
    (OPENAI, {"prompt": "a", "x" * 100_000: 1}, 400, "does not apply"),
    (API, "{not json", 422, "not valid JSON"),
], ids=lambda v: v[:40] if isinstance(v, str) else None)
def test_bad_bodies_get_a_one_line_4xx(client, path, body, status, words):
    r = post(client, path, body)
    assert r.status_code == status, r.text
    message = error_of(r)
    assert words in message and "\n" not in message and len(message) < 400, message


# An int past float's range once made the Options' range message ({:g}) raise OverflowError: a
# 500. /api/jobs's own bounds stop it first; the dialects pass the value to the Options as it came.
@pytest.mark.parametrize(("path", "field", "status"), [
    (API, "steps", 422),
    (OPENAI, "steps", 400),
    (A1111, "steps", 422),
])
def test_a_number_past_floats_range_is_a_4xx(client, path, field, status):
    r = post(client, path, '{"prompt": "a", "' + field + '": 1' + "0" * 400 + "}")
    assert r.status_code == status, r.text
    assert field in error_of(r)


def test_inert_fields_are_accepted_whatever_they_hold_and_not_echoed(client):
    """A deep inert field made the response's JSON encoder recurse past its limit -> 500."""
    r = post(client, A1111, "{" + PROMPT + ', "comments": ' + DEEP + ', "hr_scale": NaN}')
    assert r.status_code == 200, r.text
    parameters = r.json()["parameters"]
    assert parameters["prompt"] == "a red circle" and "comments" not in parameters
    ok = post(client, A1111, {"prompt": "a red circle", "steps": 1,
                              "override_settings": {"sd_model_checkpoint": "tiny [0123]"}})
    assert ok.status_code == 200 and json.loads(ok.json()["info"])["sd_model_name"] == "tiny"


def test_a_signed_url_with_a_non_ascii_signature_is_refused(served_models, tmp_path):  # noqa: F811
    """hmac.compare_digest refuses non-ASCII str: ?sig=é was a TypeError -> 500."""
    with serve(served_models, tmp_path, tokens=("tok",)) as c:
        path = "/api/jobs/" + "0" * 32 + "/images/0.png"
        for sig in ("é", "\u0661" * 32, "x" * 10_000):
            r = c.get(path, params={"sig": sig})
            assert r.status_code == 401, (sig, r.status_code)


LAYOUT = [{"box": [0, 0, 0.5, 1], "phrase": "a red circle"}]
NASTY_TEXT = ["²x²", "１x１", "٣٢x٣٢", "32x32", "64X64", "auto", "0x0", "-1x-1", "512x256",
              "DDIM", "Euler a", "dpmpp", "k_euler_a karras", "automatic", "tiny", "tiny [x]",
              "a red circle", "", " ", "\u200b", "\x00", "png", "url", "b64_json", "vivid", "hd"]
LEAVES = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2, 8, 16, 17, 32, 150, 151, 1024, 1025, 2**63, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(NASTY_TEXT),
    st.text(string.printable + "²³¹٣１\u200b\U0001f600", max_size=20),
)
# Values a field could well hold, so that most changed bodies get past validation.
PLAUSIBLE = st.sampled_from([None, True, False, 1, 2, 3, 8, 16, 32, 64, -1, 0.0, 0.5, 1.0, 7.5,
                             "32x32", "auto", "ddim", "euler", "DDIM", "Euler", "tiny", "png",
                             "b64_json", "url", "standard", "vivid", "opaque", [], {},
                             # and near misses that once slipped past hand-written parsing
                             "²x²", "１x１", "٣٢x٣٢", {"sd_model_checkpoint": 5},
                             {"sd_model_checkpoint": ["tiny"]}, float("nan"), float("inf"),
                             "boxes", LAYOUT, [{"box": [0, 0, 2, 1]}]])
NASTY = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.sampled_from(NASTY_TEXT + ["sd_model_checkpoint"]),
                                       inner, max_size=3), max_leaves=8)
VALUES = st.one_of(PLAUSIBLE, PLAUSIBLE, PLAUSIBLE, NASTY)


def bodies(model, extras=()):
    """JSON bodies: a valid one with up to three of the model's fields (or others) set to any
    value, so that most reach the code past validation; and some that are not objects."""
    names = sorted(model.model_fields) + list(extras) + ["unknown_option"]
    changes = st.dictionaries(st.sampled_from(names), VALUES, min_size=1, max_size=3)
    changed = changes.map(lambda f: {"prompt": "a red circle", "steps": 1, **f})
    return st.one_of(changed, changed, changed, NASTY.filter(lambda v: not isinstance(v, dict)))


# Two families, so the fuzz also sends options one of them lacks (steps to boxes, and back).
FUZZED = {"tiny": Instant(), "boxes": BoxesPipeline()}


@pytest.fixture(scope="module")
def instant(tmp_path_factory):
    with serve(FUZZED, tmp_path_factory.mktemp("fuzz"), queue_size=1000,
               per_client=1000) as c:
        yield c


FUZZ = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
# The body of /api/jobs is built from the served models (as create_app builds it); OpenAI's
# extensions are the models' options and inputs.
OPTION_NAMES = ("steps", "guidance", "sampler", "eta", "size", "negative_prompt", "precision",
                "strength", "layout", "init", "mask")
ENDPOINTS = [(API, job_request_model(FUZZED), ()),
             (OPENAI, ImageGenerationRequest, OPTION_NAMES),
             (A1111, Txt2ImgRequest, INERT[:6])]


@pytest.mark.parametrize(("path", "model", "extras"), ENDPOINTS, ids=["api", "openai", "a1111"])
def test_fuzzed_bodies_never_get_a_500(instant, path, model, extras):
    @FUZZ
    @given(body=bodies(model, extras))
    def check(body):
        assert_no_500(post(instant, path, json.dumps(body)), body)

    check()


def assert_no_500(r, body):
    assert r.status_code < 500, (body, r.status_code, r.text[:300])
    if r.status_code >= 400:
        message = error_of(r)
        assert isinstance(message, str) and message and "\n" not in message, r.text


# Every field of every body, one at a time, set to each of these: the bugs a random fuzz is
# unlikely to hit (a superscript size, a number where a model name goes) need one exact value
# in one exact field while the rest of the body is valid.
NEAR_MISSES = ["²x²", "١٢x١٢", "1e3x1e3", "32x32x32", "", "\x00", "x" * 5000, -1, 0, 2**63,
               -(2**70), 1e308, float("nan"), float("inf"), 0.5, True, None, [], ["x", 1],
               [[[["deep"]]]], {}, {"sd_model_checkpoint": 5}, {"sd_model_checkpoint": []},
               {"CLIP_stop_at_last_layers": float("nan")}, [],
               [{"box": [0, 0, 1, 1], "phrase": 5}], [[]] * 17,
               "data:image/png;base64,AAAA", "iVBORw0KGgo=", "boxes"]


@pytest.mark.parametrize(("path", "model", "extras"), ENDPOINTS, ids=["api", "openai", "a1111"])
def test_every_field_with_every_near_miss_never_gets_a_500(instant, path, model, extras):
    for name in [*model.model_fields, *extras, "unknown_option"]:
        for value in NEAR_MISSES:
            body = {"prompt": "a red circle", "steps": 1, name: value}
            assert_no_500(post(instant, path, json.dumps(body)), body)
