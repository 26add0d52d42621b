"""Cloudflare's failures mapped to OpenAI errors (gateway/cloudflare/error_map.py).

The status decides the client SDK's retry policy, so each mapping is pinned here,
first on `map_error` itself, then end to end through the chat route.
"""
import pytest
import requests
import responses

from gateway.cloudflare.error_map import map_error
from tests.conftest import ACCOUNT, MODEL, RUN_URL, TOKEN, TestConfig, load_data
from tests.openai_spec import validate_error

CHAT = "/v1/chat/completions"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}]}
HTML = "<html><body><h1>502 Bad Gateway</h1><p>cloudflare</p></body></html>"


def cf_error(code, message="Something went wrong"):
    """Cloudflare's v4 error envelope."""
    return {"result": None, "success": False, "errors": [{"code": code, "message": message}],
            "messages": []}


MAPPINGS = [
    # Cloudflare refusing the gateway's own token: the client's key was fine.
    pytest.param(401, load_data("cf_error_10000.json"), 502, None, id="10000-on-401"),
    pytest.param(403, load_data("cf_error_10000.json"), 502, None, id="10000-on-403"),
    pytest.param(400, cf_error(10000, "Authentication error"), 502, None, id="10000-on-400"),
    pytest.param(401, None, 502, None, id="401-no-body"),
    pytest.param(403, cf_error(10001, "Unable to authenticate request"), 502, None,
                 id="403-other-code"),
    # The client's request was bad: Cloudflare's words, status 400.
    pytest.param(400, load_data("cf_error_5006.json"), 400, None, id="5006"),
    pytest.param(400, cf_error(5004, "Invalid data type for base64 input"), 400, None,
                 id="other-4xx-code"),
    pytest.param(422, cf_error(3010, "Invalid or incomplete input"), 400, None,
                 id="other-4xx-status"),
    # No such model.
    pytest.param(400, load_data("cf_error_5007.json"), 404, "model_not_found", id="5007"),
    pytest.param(400, cf_error(3042, "Model not found"), 404, "model_not_found", id="3042"),
    pytest.param(404, load_data("cf_error_7000.json"), 404, "model_not_found", id="7000"),
    pytest.param(404, cf_error(7003, "Could not route to /accounts/x/ai/run"), 404,
                 "model_not_found", id="7003"),
    # Quota and capacity.
    pytest.param(429, load_data("cf_error_3036.json"), 429, "insufficient_quota", id="3036"),
    pytest.param(429, load_data("cf_error_3040.json"), 429, "rate_limit_exceeded",
                 id="3040-on-429"),
    pytest.param(400, load_data("cf_error_3040.json"), 429, "rate_limit_exceeded",
                 id="3040-on-400"),
    pytest.param(400, load_data("cf_error_3040_internal.json"), 429, "rate_limit_exceeded",
                 id="3040-internalCode"),
    pytest.param(500, cf_error(3040, "Capacity temporarily exceeded"), 429,
                 "rate_limit_exceeded", id="3040-on-500"),
    pytest.param(429, None, 429, "rate_limit_exceeded", id="429-no-body"),
    pytest.param(429, cf_error(971, "Please wait and consider throttling your request speed"),
                 429, "rate_limit_exceeded", id="429-other-code"),
    # Size and time.
    pytest.param(400, cf_error(3006, "Request is too large"), 413, None, id="3006"),
    pytest.param(413, cf_error(3006, "Request is too large"), 413, None, id="3006-on-413"),
    pytest.param(400, cf_error(3007, "Request timeout"), 504, None, id="3007"),
    pytest.param(500, cf_error(3008, "Request timeout"), 504, None, id="3008"),
    pytest.param(408, None, 504, None, id="408-no-body"),
    # Cloudflare itself failing.
    pytest.param(500, cf_error(3043, "Internal server error"), 502, None, id="500"),
    pytest.param(502, None, 502, None, id="502-no-body"),
    pytest.param(503, None, 502, None, id="503-html"),
    pytest.param(400, None, 502, None, id="400-html"),
    pytest.param(404, None, 502, None, id="404-html"),
    pytest.param(200, load_data("cf_success_false.json"), 502, None, id="success-false-on-200"),
    pytest.param(200, {"success": False, "errors": [], "result": None}, 502, None,
                 id="success-false-without-code"),
    pytest.param(302, None, 502, None, id="redirect"),
]


@pytest.mark.parametrize("status, body, expected, code", MAPPINGS)
def test_map_error_status(status, body, expected, code):
    error = map_error(status, body, model=MODEL, secrets=(ACCOUNT, TOKEN))
    assert error.status == expected
    validate_error(error.to_dict())
    if code is not None:
        assert error.code == code


@pytest.mark.parametrize("status, body", [
    pytest.param(401, load_data("cf_error_10000.json"), id="10000"),
    pytest.param(403, cf_error(10000, f"Token {TOKEN} may not access account {ACCOUNT}"),
                 id="10000-message-with-secrets"),
    pytest.param(403, cf_error(9109, f"Unauthorized to access account {ACCOUNT} with {TOKEN}"),
                 id="other-code-message-with-secrets"),
    pytest.param(401, None, id="no-body"),
])
def test_map_error_blames_gateway_token_without_revealing_it(status, body):
    error = map_error(status, body, model=MODEL, secrets=(ACCOUNT, TOKEN))
    assert error.status == 502
    message = error.message.lower()
    assert "cloudflare" in message and "token" in message
    assert TOKEN not in error.message and ACCOUNT not in error.message


@pytest.mark.parametrize("status, body", [
    pytest.param(400, load_data("cf_error_5006.json"), id="5006"),
    pytest.param(400, cf_error(5004, "Invalid data type for base64 input"), id="other-code"),
])
def test_map_error_passes_on_cloudflare_message_for_bad_input(status, body):
    error = map_error(status, body, model=MODEL)
    assert error.status == 400
    assert body["errors"][0]["message"] in error.message


def test_map_error_names_model_when_missing():
    error = map_error(400, load_data("cf_error_5007.json"), model="@cf/meta/llama-9-nonexistent")
    assert error.param == "model"
    assert "@cf/meta/llama-9-nonexistent" in error.message


def test_map_error_quota_tells_sdks_not_to_retry():
    error = map_error(429, load_data("cf_error_3036.json"), model=MODEL)
    assert error.headers["x-should-retry"] == "false"


@pytest.mark.parametrize("body", [
    pytest.param(load_data("cf_error_3040.json"), id="3040"),
    pytest.param(None, id="plain-429"),
])
def test_map_error_rate_limit_is_retryable(body):
    error = map_error(429, body, model=MODEL)
    assert error.headers.get("x-should-retry") != "false"


# ---------------------------------------------------------------- through the route


class NoRetryConfig(TestConfig):
    """One attempt per request: these tests pin the mapping, not the retry policy."""

    UPSTREAM_RETRIES = 0


@pytest.fixture
def config_class():
    return NoRetryConfig


def add_answer(upstream, status, body):
    """Cloudflare answering the run of MODEL with `status` and `body` (JSON, or HTML for None)."""
    if body is None:
        upstream.add(responses.POST, RUN_URL + MODEL, status=status, body=HTML,
                     content_type="text/html")
    else:
        upstream.add(responses.POST, RUN_URL + MODEL, status=status, json=body)


def assert_error(rv, status):
    assert rv.status_code == status, rv.get_data(as_text=True)
    assert rv.mimetype == "application/json"
    body = rv.get_json()
    validate_error(body)
    text = rv.get_data(as_text=True)
    assert TOKEN not in text and ACCOUNT not in text
    return body["error"]


@pytest.mark.parametrize("status, body, expected, code",
                         [m for m in MAPPINGS if m.id != "redirect"])
def test_route_maps_cloudflare_error(client, auth, upstream, status, body, expected, code):
    add_answer(upstream, status, body)
    rv = client.post(CHAT, json=BODY, headers=auth)
    error = assert_error(rv, expected)
    if code is not None:
        assert error["code"] == code


@pytest.mark.parametrize("status, body", [
    pytest.param(403, cf_error(10000, f"Token {TOKEN} may not access account {ACCOUNT}"),
                 id="10000"),
    pytest.param(403, cf_error(9109, f"Unauthorized to access account {ACCOUNT} with {TOKEN}"),
                 id="other-code"),
    pytest.param(400, cf_error(5006, f"Bad input for /accounts/{ACCOUNT}/ai/run"), id="5006"),
])
def test_route_never_reveals_gateway_secrets(client, auth, upstream, status, body):
    add_answer(upstream, status, body)
    rv = client.post(CHAT, json=BODY, headers=auth)
    assert_error(rv, 502 if status == 403 else 400)


def test_route_quota_answer_tells_sdks_not_to_retry(client, auth, upstream):
    add_answer(upstream, 429, load_data("cf_error_3036.json"))
    rv = client.post(CHAT, json=BODY, headers=auth)
    assert assert_error(rv, 429)["code"] == "insufficient_quota"
    assert rv.headers["x-should-retry"] == "false"


def test_route_does_not_follow_redirect(client, auth, upstream):
    elsewhere = "https://elsewhere.test/steal"
    upstream.add(responses.POST, RUN_URL + MODEL, status=302, headers={"Location": elsewhere})
    upstream.add(responses.POST, elsewhere, json={"result": {"response": "followed"}})
    upstream.add(responses.GET, elsewhere, json={"result": {"response": "followed"}})
    rv = client.post(CHAT, json=BODY, headers=auth)
    assert_error(rv, 502)
    assert len(upstream.calls) == 1


@pytest.mark.parametrize("failure, status", [
    pytest.param(requests.ConnectionError("connection refused"), 502, id="connection-error"),
    pytest.param(requests.ReadTimeout("read timed out"), 504, id="read-timeout"),
])
def test_route_maps_network_failure(client, auth, upstream, failure, status):
    upstream.add(responses.POST, RUN_URL + MODEL, body=failure)
    rv = client.post(CHAT, json=BODY, headers=auth)
    error = assert_error(rv, status)
    assert RUN_URL not in error["message"]


@pytest.mark.parametrize("body", [
    pytest.param(b"", id="empty"),
    pytest.param(b"not json", id="text"),
    pytest.param(HTML.encode(), id="html"),
])
def test_route_maps_unreadable_200(client, auth, upstream, body):
    upstream.add(responses.POST, RUN_URL + MODEL, status=200, body=body)
    rv = client.post(CHAT, json=BODY, headers=auth)
    assert_error(rv, 502)
