"""OpenAI-shaped errors (gateway/errors.py): every error the client sees is one envelope."""
import io
import json

import pytest
import responses

from gateway import create_app
from gateway.errors import (APIError, AuthenticationError, InvalidRequestError, NotFoundError,
                            QuotaExceededError, RateLimitError, ServiceUnavailableError,
                            UpstreamError, UpstreamTimeoutError)
from tests.conftest import KEY, MODEL, RUN_URL, TestConfig, cf_ok
from tests.openai_spec import validate_error

CHAT = "/v1/chat/completions"
SECRET_DETAIL = "kaboom-internal-detail-7f3a"
MIB = 1024 * 1024
VALID = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}).encode()


def padded(size):
    """A valid chat body of exactly `size` bytes (JSON allows trailing whitespace)."""
    return VALID + b" " * (size - len(VALID))


def assert_envelope(rv, status):
    """`{"error": {"message", "type", "param", "code"}}` as JSON, valid against OpenAI's schema."""
    assert rv.status_code == status, rv.get_data(as_text=True)
    assert rv.mimetype == "application/json"
    body = rv.get_json()
    validate_error(body)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize("method, path, kwargs, status", [
    pytest.param("post", CHAT, {"data": b"{"}, 400, id="400-bad-json"),
    pytest.param("post", CHAT, {"headers": {}}, 401, id="401-no-key"),
    pytest.param("get", "/v1/nope", {}, 404, id="404-unknown-route"),
    # "/" is the playground page (tests/test_playground.py covers its 404 when it is off).
    pytest.param("get", "/nope", {}, 404, id="404-outside-v1"),
    pytest.param("post", CHAT, {"json": {"model": "nope", "messages": [
        {"role": "user", "content": "x"}]}}, 404, id="404-unknown-model"),
    pytest.param("get", CHAT, {}, 405, id="405-get-chat"),
    pytest.param("put", "/v1/completions", {}, 405, id="405-put-completions"),
    pytest.param("post", CHAT, {"data": b"{" + b" " * (1024 * 1024) + b"}"}, 413,
                 id="413-body-over-1mib"),
])
def test_error_is_openai_envelope(client, method, path, kwargs, status):
    headers = kwargs.pop("headers", {"Authorization": f"Bearer {KEY}",
                                     "Content-Type": "application/json"})
    rv = getattr(client, method)(path, headers=headers, **kwargs)
    assert_envelope(rv, status)


def test_body_over_1mib_is_refused_even_when_valid_json(client, auth, upstream):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x" * (1024 * 1024)}]}
    rv = client.post(CHAT, json=body, headers=auth)
    assert_envelope(rv, 413)
    assert len(upstream.calls) == 0


@pytest.mark.parametrize("size, status", [
    pytest.param(MIB, 200, id="exactly-1mib"),
    pytest.param(MIB + 1, 413, id="one-byte-over"),
])
def test_body_size_limit_is_1mib(client, auth, upstream, size, status):
    upstream.add(responses.POST, RUN_URL + MODEL, json=cf_ok({"response": "hi"}))
    rv = client.post(CHAT, data=padded(size),
                     headers={**auth, "Content-Type": "application/json"})
    assert rv.status_code == status, rv.get_data(as_text=True)
    if status == 413:
        assert_envelope(rv, 413)
        assert len(upstream.calls) == 0


def post_chunked(client, data, headers):
    """POST without Content-Length, as gunicorn hands a chunked request to the app."""
    return client.post(CHAT, input_stream=io.BytesIO(data),
                       headers={**headers, "Content-Type": "application/json",
                                "Transfer-Encoding": "chunked"},
                       environ_overrides={"wsgi.input_terminated": True})


def test_chunked_body_under_limit_is_read(client, auth, upstream):
    upstream.add(responses.POST, RUN_URL + MODEL, json=cf_ok({"response": "hi"}))
    rv = post_chunked(client, VALID, auth)
    assert rv.status_code == 200, rv.get_data(as_text=True)


@pytest.mark.parametrize("data", [
    pytest.param(b"{" + b" " * MIB + b"}", id="invalid-once-cut"),
    pytest.param(padded(2 * MIB), id="valid-prefix-then-padding"),
])
def test_chunked_body_over_1mib_is_413(client, auth, upstream, data):
    """Without Content-Length the limit must still hold, not cut the body at 1 MiB."""
    upstream.add(responses.POST, RUN_URL + MODEL, json=cf_ok({"response": "hi"}))
    rv = post_chunked(client, data, auth)
    assert_envelope(rv, 413)
    assert len(upstream.calls) == 0


class ProductionLikeConfig(TestConfig):
    TESTING = False


@pytest.fixture
def crashing_client():
    """An app (not in TESTING mode) with a route that raises an unplanned exception."""
    app = create_app(ProductionLikeConfig)

    @app.get("/v1/boom")
    def boom():
        raise RuntimeError(SECRET_DETAIL)

    return app.test_client()


def test_unhandled_exception_is_generic_500(crashing_client, auth):
    rv = crashing_client.get("/v1/boom", headers=auth)
    error = assert_envelope(rv, 500)
    text = rv.get_data(as_text=True)
    assert SECRET_DETAIL not in text
    assert "Traceback" not in text
    assert "RuntimeError" not in text
    assert error["type"] in ("server_error", "api_error")
    assert rv.headers.get("X-Request-ID")


@pytest.mark.parametrize("error, status, code", [
    pytest.param(InvalidRequestError("bad", param="temperature"), 400, None, id="invalid-request"),
    pytest.param(AuthenticationError("no key"), 401, "invalid_api_key", id="authentication"),
    pytest.param(NotFoundError("no model", param="model"), 404, "model_not_found", id="not-found"),
    pytest.param(RateLimitError("slow down"), 429, "rate_limit_exceeded", id="rate-limit"),
    pytest.param(QuotaExceededError("used up"), 429, "insufficient_quota", id="quota"),
    pytest.param(UpstreamError("bad gateway"), 502, "upstream_error", id="upstream"),
    pytest.param(UpstreamTimeoutError("slow"), 504, "timeout", id="upstream-timeout"),
    pytest.param(ServiceUnavailableError("not configured"), 503, "service_unavailable",
                 id="service-unavailable"),
    pytest.param(APIError("too big", status=413, code="request_too_large"), 413,
                 "request_too_large", id="explicit-status"),
])
def test_error_class_status_and_envelope(error, status, code):
    assert error.status == status
    body = error.to_dict()
    validate_error(body)
    assert body["error"]["code"] == code
    assert body["error"]["message"] == error.message


def test_quota_error_tells_sdks_not_to_retry():
    assert QuotaExceededError("used up").headers["x-should-retry"] == "false"


def test_error_keyword_does_not_leak_between_instances():
    """Per-instance code and status must not change the class defaults."""
    APIError("x", status=418, code="teapot")
    fresh = InvalidRequestError("y")
    assert (fresh.status, fresh.code) == (400, None)
