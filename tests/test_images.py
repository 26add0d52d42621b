"""POST /v1/images/generations: the translation (gateway/openai/images.py) and the route.

The route runs in-process against the fake Workers AI (its three image families: JSON
base64, raw PNG bytes, multipart-only); answers are checked against OpenAI's schemas.
"""
import base64
import struct

import pytest

from gateway.openai import images
from tests.fake_media import png
from tests.media_gateway import assert_refused, AUTH, media_client, run_requests, start_fake
from tests.openai_spec import validate, validate_error

SDXL = "@cf/stabilityai/stable-diffusion-xl-base-1.0"
FLUX1 = "@cf/black-forest-labs/flux-1-schnell"
FLUX2 = "@cf/black-forest-labs/flux-2-klein-4b"
URL = "/v1/images/generations"


def png_size(data):
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return struct.unpack(">II", data[16:24])


# ---------------------------------------------------------------- translation


@pytest.mark.parametrize("data, body", [
    pytest.param(png(4, 3), None, id="raw-png"),
    pytest.param(None, {"result": {"image": base64.b64encode(png(4, 3)).decode()}},
                 id="json-base64"),
])
def test_both_answer_forms_give_the_image(data, body):
    assert png_size(images.image_bytes(data, body)) == (4, 3)


@pytest.mark.parametrize("data, body", [
    pytest.param(b"<html>Bad gateway</html>", None, id="html"),
    pytest.param(b"", None, id="empty"),
    pytest.param(None, {"result": {"image": "not base64!"}}, id="bad-base64"),
    pytest.param(None, {"result": {"image": base64.b64encode(b"plain text").decode()}},
                 id="base64-not-an-image"),
    pytest.param(None, {"result": {"response": "text"}}, id="no-image"),
])
def test_anything_but_an_image_is_refused(data, body):
    with pytest.raises(images.NotAnImage):
        images.image_bytes(data, body)


def test_a_given_seed_counts_up_so_images_differ():
    assert [images.varied({"prompt": "x", "seed": 7}, i)["seed"] for i in range(3)] == [7, 8, 9]
    assert images.varied({"prompt": "x"}, 2) == {"prompt": "x"}


def test_unknown_schema_leaves_the_judging_to_cloudflare():
    payload, multipart = images.upstream_inputs({"prompt": "x", "size": "64x64", "steps": 3},
                                                "@cf/new/model", None)
    assert payload == {"prompt": "x", "width": 64, "height": 64, "steps": 3} and not multipart


# ---------------------------------------------------------------- route


@pytest.fixture(scope="module")
def fake():
    server = start_fake()
    yield server
    server.stop()


@pytest.fixture
def client(fake):
    fake.reset()
    return media_client(fake, MODEL_ALIASES={"dall-e-3": SDXL})


def generate(client, **body):
    return client.post(URL, json=body, headers=AUTH)


def decoded(rv):
    assert rv.status_code == 200, rv.get_data(as_text=True)
    validate(rv.get_json(), "ImagesResponse")
    return [base64.b64decode(item["b64_json"]) for item in rv.get_json()["data"]]


def test_png_bytes_family_with_size_seed_and_n(client, fake):
    pictures = decoded(generate(client, model=SDXL, prompt="a lighthouse at dusk",
                                size="512x768", n=3, seed=11, negative_prompt="fog", steps=8))
    assert [png_size(p) for p in pictures] == [(512, 768)] * 3
    sent = sorted((r.json for r in run_requests(fake)), key=lambda p: p["seed"])
    assert sent == [{"prompt": "a lighthouse at dusk", "width": 512, "height": 768,
                     "num_steps": 8, "seed": seed, "negative_prompt": "fog"}
                    for seed in (11, 12, 13)]


def test_json_base64_family(client, fake):
    (picture,) = decoded(generate(client, model=FLUX1, prompt="a lighthouse at dusk", steps=4))
    assert png_size(picture) == (1024, 1024)
    assert run_requests(fake)[0].json == {"prompt": "a lighthouse at dusk", "steps": 4}


def test_multipart_only_family_gets_a_form(client, fake):
    (picture,) = decoded(generate(client, model=FLUX2, prompt="a lighthouse at dusk",
                                  size="256x512"))
    assert png_size(picture) == (256, 512)
    sent = run_requests(fake)[0]
    assert sent.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert b'name="prompt"\r\n\r\na lighthouse at dusk' in sent.body


def test_alias_works(client, fake):
    rv = generate(client, model="dall-e-3", prompt="a lighthouse at dusk", size="256x256")
    assert png_size(decoded(rv)[0]) == (256, 256)
    assert run_requests(fake)[0].model == SDXL


@pytest.mark.parametrize("body, param", [
    pytest.param({"prompt": "x"}, "model", id="no-model"),
    pytest.param({"model": SDXL}, "prompt", id="no-prompt"),
    pytest.param({"model": SDXL, "prompt": ""}, "prompt", id="empty-prompt"),
    pytest.param({"model": FLUX1, "prompt": "x" * 2049}, "prompt", id="prompt-over-model-max"),
    pytest.param({"model": SDXL, "prompt": "x", "n": 0}, "n", id="n-0"),
    pytest.param({"model": SDXL, "prompt": "x", "n": 5}, "n", id="n-5"),
    pytest.param({"model": SDXL, "prompt": "x", "n": "2"}, "n", id="n-string"),
    pytest.param({"model": SDXL, "prompt": "x", "size": "big"}, "size", id="size-malformed"),
    pytest.param({"model": SDXL, "prompt": "x", "size": "100x100"}, "size", id="size-too-small"),
    pytest.param({"model": SDXL, "prompt": "x", "size": "4096x4096"}, "size",
                 id="size-too-large"),
    pytest.param({"model": FLUX1, "prompt": "x", "size": "512x512"}, "size",
                 id="size-on-model-without-width"),
    pytest.param({"model": SDXL, "prompt": "x", "response_format": "url"}, "response_format",
                 id="url"),
    pytest.param({"model": SDXL, "prompt": "x", "steps": 50}, "steps", id="steps-over-max"),
    pytest.param({"model": FLUX1, "prompt": "x", "seed": 1}, "seed", id="seed-not-taken"),
    pytest.param({"model": FLUX1, "prompt": "x", "negative_prompt": "y"}, "negative_prompt",
                 id="negative-prompt-not-taken"),
    pytest.param({"model": "@cf/baai/bge-base-en-v1.5", "prompt": "x"}, "model",
                 id="embedding-model"),
])
def test_bad_input_is_400_naming_the_parameter_with_nothing_upstream(client, fake, body, param):
    rv = generate(client, **body)
    assert_refused(rv, fake, param)


def test_non_image_answer_is_502(client, fake):
    assert generate(client, model=FLUX1, prompt="x").status_code == 200  # schema now cached
    fake.add_fault("invalid_json", model=FLUX1, body='{"result": {"image": "aGVsbG8="}}')
    rv = generate(client, model=FLUX1, prompt="x")
    assert rv.status_code == 502
    validate_error(rv.get_json())
    assert rv.get_json()["error"]["code"] == "not_an_image"


def test_image_over_the_upstream_body_cap_is_502(fake):
    fake.reset()
    client = media_client(fake, UPSTREAM_MAX_BODY_BYTES=1000)
    rv = generate(client, model=SDXL, prompt="x", size="1024x1024")  # a PNG of ~3 kB
    assert rv.status_code == 502, rv.get_data(as_text=True)
    assert rv.get_json()["error"]["code"] == "upstream_body_too_large"
