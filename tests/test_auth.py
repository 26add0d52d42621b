"""Client keys (gateway/auth.py) and request ids (gateway/ops/request_id.py)."""
import re

import pytest
import responses

from tests.conftest import KEY, MODEL, RUN_URL, cf_ok
from tests.openai_spec import validate_error

CHAT = "/v1/chat/completions"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}]}
WRONG_KEY = "sk-wrong-presented-key-9d2e"


@pytest.fixture
def run(upstream):
    upstream.add(responses.POST, RUN_URL + MODEL, json=cf_ok({"response": "hi"}))
    return upstream


def assert_unauthorized(rv):
    assert rv.status_code == 401, rv.get_data(as_text=True)
    assert rv.mimetype == "application/json"
    body = rv.get_json()
    validate_error(body)
    assert body["error"]["code"] == "invalid_api_key"
    assert rv.headers["WWW-Authenticate"] == "Bearer"


# ---------------------------------------------------------------- keys


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="no-header"),
    pytest.param({"Authorization": ""}, id="empty-header"),
    pytest.param({"Authorization": f"Basic {WRONG_KEY}"}, id="basic-scheme"),
    pytest.param({"Authorization": f"Token {KEY}"}, id="other-scheme-right-key"),
    pytest.param({"Authorization": KEY}, id="no-scheme"),
    pytest.param({"Authorization": "Bearer"}, id="bearer-without-key"),
    pytest.param({"Authorization": "Bearer    "}, id="bearer-blank-key"),
    pytest.param({"Authorization": f"Bearer {WRONG_KEY}"}, id="wrong-key"),
    pytest.param({"Authorization": f"Bearer {KEY}x"}, id="key-with-suffix"),
    pytest.param({"Authorization": f"Bearer {KEY[:-1]}"}, id="key-prefix"),
    pytest.param({"X-API-Key": KEY}, id="key-in-other-header"),
])
def test_refuses_request_without_valid_key(client, upstream, headers):
    rv = client.post(CHAT, json=BODY, headers=headers)
    assert_unauthorized(rv)
    assert len(upstream.calls) == 0


@pytest.mark.parametrize("presented", [
    pytest.param(f"Bearer {WRONG_KEY}", id="bearer"),
    pytest.param(f"Basic {WRONG_KEY}", id="basic"),
])
def test_refusal_never_echoes_presented_key(client, presented):
    rv = client.post(CHAT, json=BODY, headers={"Authorization": presented})
    assert_unauthorized(rv)
    assert WRONG_KEY not in rv.get_data(as_text=True)
    assert WRONG_KEY not in str(rv.headers)


@pytest.mark.parametrize("key", [pytest.param(KEY, id="first"),
                                 pytest.param("sk-second-key", id="second")])
def test_accepts_every_configured_key(client, run, key):
    rv = client.post(CHAT, json=BODY, headers={"Authorization": f"Bearer {key}"})
    assert rv.status_code == 200, rv.get_data(as_text=True)


@pytest.mark.parametrize("method, path", [
    pytest.param("get", "/v1/nope", id="unknown-v1-route"),
    pytest.param("get", "/admin", id="unknown-root-route"),
    pytest.param("post", "/v1/engines/davinci/completions", id="unknown-post-route"),
    pytest.param("get", CHAT, id="wrong-method"),
    pytest.param("get", "/v1/models", id="models"),
])
def test_hides_routes_from_caller_without_key(client, upstream, method, path):
    rv = getattr(client, method)(path)
    assert_unauthorized(rv)
    assert len(upstream.calls) == 0


def test_health_needs_no_key(client, upstream):
    rv = client.get("/healthz")
    assert rv.status_code == 200
    assert len(upstream.calls) == 0


@pytest.mark.parametrize("path", [CHAT, "/v1/completions", "/v1/models"])
def test_preflight_needs_no_key(client, upstream, path):
    rv = client.options(path, headers={
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type",
    })
    assert rv.status_code in (200, 204), rv.get_data(as_text=True)
    assert rv.headers.get("Access-Control-Allow-Origin") in ("*", "https://app.example.com")
    methods = {m.strip().upper() for m in rv.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"POST", "OPTIONS"} <= methods
    allowed = {h.strip().lower() for h in rv.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert len(upstream.calls) == 0


# ---------------------------------------------------------------- request ids


REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@pytest.mark.parametrize("method, path, headers, status", [
    pytest.param("get", "/healthz", {}, 200, id="health"),
    pytest.param("post", CHAT, {}, 401, id="unauthorized"),
    pytest.param("get", "/v1/nope", {"Authorization": f"Bearer {KEY}"}, 404, id="not-found"),
    pytest.param("get", CHAT, {"Authorization": f"Bearer {KEY}"}, 405, id="method-not-allowed"),
    pytest.param("post", CHAT, {"Authorization": f"Bearer {KEY}"}, 400, id="bad-request"),
    pytest.param("options", CHAT, {"Origin": "https://a.example",
                                   "Access-Control-Request-Method": "POST"}, 200, id="preflight"),
])
def test_every_response_has_request_id(client, method, path, headers, status):
    rv = getattr(client, method)(path, headers=headers)
    assert rv.status_code == status
    assert REQUEST_ID.match(rv.headers.get("X-Request-ID", ""))


def test_successful_response_has_request_id(client, auth, run):
    rv = client.post(CHAT, json=BODY, headers=auth)
    assert rv.status_code == 200
    assert REQUEST_ID.match(rv.headers.get("X-Request-ID", ""))


@pytest.mark.parametrize("request_id", [
    pytest.param("abc-123", id="simple"),
    pytest.param("req_01HZX3.k:9", id="safe-punctuation"),
    pytest.param("a" * 128, id="longest"),
])
def test_echoes_sane_client_request_id(client, request_id):
    rv = client.get("/healthz", headers={"X-Request-ID": request_id})
    assert rv.headers["X-Request-ID"] == request_id


@pytest.mark.parametrize("request_id", [
    pytest.param("a" * 129, id="too-long"),
    pytest.param("abc 123", id="space"),
    pytest.param("<script>alert(1)</script>", id="script"),
    pytest.param("id;rm -rf /", id="shell"),
    pytest.param("ünïcode", id="non-ascii"),
])
def test_replaces_insane_client_request_id(client, request_id):
    rv = client.post(CHAT, json=BODY, headers={"X-Request-ID": request_id})
    assert_unauthorized(rv)
    echoed = rv.headers["X-Request-ID"]
    assert echoed != request_id
    assert REQUEST_ID.match(echoed)
    assert request_id not in rv.get_data(as_text=True)


def test_generated_request_ids_differ(client):
    first = client.get("/healthz").headers["X-Request-ID"]
    second = client.get("/healthz").headers["X-Request-ID"]
    assert first != second
