"""The Workers AI client (gateway/cloudflare/client.py): URLs, credentials, failures, retries, failover.

Cloudflare is `responses`; every pause the client takes goes through a recorded
`sleep`, so no test waits for real time.
"""
import json
import logging
import time
import types
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from gateway import create_app
from gateway.errors import APIError
from tests.conftest import (ACCOUNT, API_BASE, KEY, MODEL, RUN_URL, SEARCH_URL, TOKEN, NoAccount,
                            NoRetries, TestConfig, cf_ok, load_data)
from tests.openai_spec import validate_error

CHAT = "/v1/chat/completions"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}]}
OK = load_data("cf_chat_classic_ok.json")
EVIL = "https://evil.test/steal-the-token"

A1, T1 = "acct-a1", "t1-token-secret"
A2, T2 = "acct-a2", "t2-token-secret"


def run_url(account, model=MODEL):
    return f"{API_BASE}/accounts/{account}/ai/run/{model}"


class TwoAccounts(TestConfig):
    CLOUDFLARE_ACCOUNT_ID = ""
    CLOUDFLARE_API_TOKEN = ""
    CLOUDFLARE_ACCOUNTS = [(A1, T1), (A2, T2)]


class LowRetryAfterCap(TestConfig):
    UPSTREAM_RETRY_AFTER_CAP = 7.0


def cf_error(code, message="Something went wrong"):
    return {"result": None, "success": False, "errors": [{"code": code, "message": message}],
            "messages": []}


@pytest.fixture
def sleeps(monkeypatch):
    """Every pause the upstream client takes, instead of taking it."""
    taken = []
    fake_time = types.SimpleNamespace(monotonic=time.monotonic, time=time.time,
                                      sleep=taken.append)
    monkeypatch.setattr("gateway.cloudflare.client.time", fake_time)
    return taken


@pytest.fixture
def two(sleeps):
    """A client of a gateway with two Cloudflare accounts."""
    return create_app(TwoAccounts).test_client()


@pytest.fixture
def error_log():
    """The gateway's ERROR records (its loggers do not propagate to pytest's handler)."""
    class Keep(logging.Handler):
        def __init__(self):
            super().__init__(level=logging.ERROR)
            self.records = []

        def emit(self, record):
            self.records.append(record)

    handler = Keep()
    logger = logging.getLogger("gateway")
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


def chat(client, auth=None, **extra):
    return client.post(CHAT, json={**BODY, **extra},
                       headers=auth or {"Authorization": f"Bearer {KEY}"})


def assert_error(rv, status, code=None):
    assert rv.status_code == status, rv.get_data(as_text=True)
    body = rv.get_json()
    validate_error(body)
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


def accounts_called(mock):
    return [urlsplit(call.request.url).path.split("/")[4] for call in mock.calls]


# ---------------------------------------------------------------- URLs and credentials


def test_run_calls_exact_url_with_model_unescaped(client, auth, upstream, sleeps):
    upstream.add(responses.POST, RUN_URL + MODEL, json=OK)
    rv = client.post(CHAT, json=BODY, headers=auth)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    assert len(upstream.calls) == 1
    assert upstream.calls[0].request.url == f"{API_BASE}/accounts/{ACCOUNT}/ai/run/{MODEL}"
    assert "%40" not in upstream.calls[0].request.url
    assert "%2F" not in upstream.calls[0].request.url


def test_search_calls_exact_url_with_text_generation_task(app, upstream, sleeps):
    upstream.add(responses.GET, SEARCH_URL, json={**cf_ok([]), "result_info": {"total_count": 0}})
    app.extensions["upstream"].search_models()
    url = urlsplit(upstream.calls[0].request.url)
    expected = f"{API_BASE}/accounts/{ACCOUNT}/ai/models/search"
    assert f"{url.scheme}://{url.netloc}{url.path}" == expected
    assert parse_qs(url.query)["task"] == ["Text Generation"]


def test_sends_gateway_token_never_client_authorization(client, auth, upstream, sleeps):
    upstream.add(responses.POST, RUN_URL + MODEL, json=OK)
    rv = client.post(CHAT, json=BODY, headers={**auth, "Cookie": "session=abc",
                                              "X-Api-Key": KEY})
    assert rv.status_code == 200
    sent = upstream.calls[0].request.headers
    assert sent["Authorization"] == f"Bearer {TOKEN}"
    assert KEY not in str(dict(sent))
    assert "Cookie" not in sent


def test_search_sends_gateway_token(app, upstream, sleeps):
    upstream.add(responses.GET, SEARCH_URL, json=cf_ok([]))
    app.extensions["upstream"].search_models()
    assert upstream.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("body, expected", [
    pytest.param(cf_ok({"input": {"type": "object"}, "output": {"type": "object"}}),
                 {"input": {"type": "object"}, "output": {"type": "object"}}, id="both"),
    pytest.param(cf_ok({"input": {"type": "object"}}), {"input": {"type": "object"}, "output": {}},
                 id="no-output"),
    pytest.param(cf_ok({"output": {}}), None, id="no-input"),
    pytest.param(cf_ok([]), None, id="result-not-object"),
])
def test_model_schema_url_token_and_body(app, upstream, sleeps, body, expected):
    schema_url = SEARCH_URL.replace("/search", "/schema")
    upstream.add(responses.GET, schema_url, json=body)
    client = app.extensions["upstream"]
    if expected is None:
        with pytest.raises(APIError):
            client.model_schema(MODEL)
    else:
        assert client.model_schema(MODEL) == expected
    request = upstream.calls[0].request
    assert parse_qs(urlsplit(request.url).query) == {"model": [MODEL]}
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_an_open_stream_lets_go_of_its_request(app, upstream, sleeps):
    """The request's body (the whole payload: a long conversation) is not kept for as long
    as the stream it asked for is open; what was sent is unchanged."""
    upstream.add(responses.POST, RUN_URL + MODEL, body=b"data: [DONE]\n\n",
                 content_type="text/event-stream")
    payload = {"messages": [{"role": "user", "content": "long " * 1000}], "stream": True}
    answer = app.extensions["upstream"].run(MODEL, payload, stream=True)
    try:
        assert answer.stream is not None
        assert answer.stream.request is None
        assert json.loads(upstream.calls[0].request.body) == payload
    finally:
        answer.stream.close()


# ---------------------------------------------------------------- network failures


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_never_followed(client, upstream, sleeps, status):
    upstream.add(responses.POST, RUN_URL + MODEL, status=status, headers={"Location": EVIL})
    upstream.add(responses.POST, EVIL, json=OK)
    upstream.add(responses.GET, EVIL, json=OK)
    rv = chat(client)
    assert_error(rv, 502)
    assert [call.request.url for call in upstream.calls] == [RUN_URL + MODEL]
    assert EVIL not in rv.get_data(as_text=True)


@pytest.mark.parametrize("failure, status, code", [
    pytest.param(requests.ConnectionError("Max retries exceeded with url"), 502,
                 "upstream_unreachable", id="connection-error"),
    pytest.param(requests.ConnectTimeout("connect timed out"), 504, "connect_timeout",
                 id="connect-timeout"),
])
def test_network_failure_is_retried_then_mapped(client, upstream, sleeps, failure, status, code):
    upstream.add(responses.POST, RUN_URL + MODEL, body=failure)
    rv = chat(client)
    assert_error(rv, status, code)
    assert len(upstream.calls) == 1 + TestConfig.UPSTREAM_RETRIES
    assert len(sleeps) == TestConfig.UPSTREAM_RETRIES


@pytest.mark.parametrize("failure", [
    pytest.param(requests.ConnectionError("reset"), id="connection-error"),
    pytest.param(requests.ConnectTimeout("connect timed out"), id="connect-timeout"),
])
def test_network_failure_then_success_is_served(client, upstream, sleeps, failure):
    upstream.add(responses.POST, RUN_URL + MODEL, body=failure)
    upstream.add(responses.POST, RUN_URL + MODEL, json=OK)
    rv = chat(client)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    assert len(upstream.calls) == 2
    assert len(sleeps) == 1


def test_read_timeout_is_504(client, upstream, sleeps):
    upstream.add(responses.POST, RUN_URL + MODEL, body=requests.ReadTimeout("read timed out"))
    rv = chat(client)
    assert_error(rv, 504)


LEAKY = f"HTTPSConnectionPool(host='cf.test'): Max retries exceeded with url: {RUN_URL}{MODEL}"


@pytest.mark.parametrize("status, body, kwargs", [
    pytest.param(200, requests.ConnectionError(LEAKY), {}, id="connection-error"),
    pytest.param(200, requests.ConnectTimeout(LEAKY), {}, id="connect-timeout"),
    pytest.param(200, requests.ReadTimeout(LEAKY), {}, id="read-timeout"),
    pytest.param(302, "", {"headers": {"Location": f"{API_BASE}/accounts/{ACCOUNT}/x"}},
                 id="redirect"),
    pytest.param(401, cf_error(10000, f"Authentication error for {ACCOUNT} with {TOKEN}"), {},
                 id="10000"),
    pytest.param(403, cf_error(10001, f"token {TOKEN} cannot access account {ACCOUNT}"), {},
                 id="403-other-code"),
    pytest.param(400, cf_error(5006, f"Bad input for account {ACCOUNT} token {TOKEN}"), {},
                 id="5006-echoing-secrets"),
    pytest.param(500, f"<html>{API_BASE} {ACCOUNT} {TOKEN}</html>", {}, id="500-html"),
    pytest.param(429, load_data("cf_error_3036.json"), {}, id="3036"),
    pytest.param(429, load_data("cf_error_3040.json"), {}, id="3040"),
])
def test_error_never_reveals_token_account_or_api_base(client, upstream, sleeps, status, body,
                                                       kwargs):
    if isinstance(body, Exception):
        upstream.add(responses.POST, RUN_URL + MODEL, body=body)
    elif isinstance(body, dict):
        upstream.add(responses.POST, RUN_URL + MODEL, status=status, json=body, **kwargs)
    else:
        upstream.add(responses.POST, RUN_URL + MODEL, status=status, body=body, **kwargs)
    rv = chat(client)
    assert rv.status_code >= 400
    text = rv.get_data(as_text=True)
    validate_error(rv.get_json())
    for secret in (TOKEN, ACCOUNT, API_BASE, "cf.test"):
        assert secret not in text
        assert secret not in str(rv.headers)


# ---------------------------------------------------------------- retries


RETRIED = [
    pytest.param(429, load_data("cf_error_3040.json"), 429, id="3040-on-429"),
    pytest.param(400, load_data("cf_error_3040_internal.json"), 429, id="3040-internalCode"),
    pytest.param(500, cf_error(3043, "Internal server error"), 502, id="500"),
    pytest.param(502, None, 502, id="502"),
    pytest.param(503, None, 502, id="503"),
    pytest.param(408, None, 504, id="408"),
    pytest.param(400, cf_error(3007, "Request timeout"), 504, id="3007"),
]


def add_failure(mock, status, body, url=RUN_URL + MODEL, headers=None):
    if body is None:
        mock.add(responses.POST, url, status=status, body="<html>error</html>", headers=headers)
    else:
        mock.add(responses.POST, url, status=status, json=body, headers=headers)


@pytest.mark.parametrize("status, body, final", RETRIED)
def test_transient_failure_is_retried_up_to_limit(client, upstream, sleeps, status, body, final):
    add_failure(upstream, status, body)
    rv = chat(client)
    assert_error(rv, final)
    assert len(upstream.calls) == 1 + TestConfig.UPSTREAM_RETRIES


@pytest.mark.parametrize("status, body, final", RETRIED)
def test_transient_failure_then_success_is_served(client, upstream, sleeps, status, body, final):
    add_failure(upstream, status, body)
    upstream.add(responses.POST, RUN_URL + MODEL, json=OK)
    rv = chat(client)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    assert len(upstream.calls) == 2


@pytest.mark.parametrize("config_class", [NoRetries])
def test_no_retry_when_retries_is_zero(client, upstream, sleeps):
    add_failure(upstream, 429, load_data("cf_error_3040.json"))
    rv = chat(client)
    assert_error(rv, 429, "rate_limit_exceeded")
    assert len(upstream.calls) == 1
    assert sleeps == []


@pytest.mark.parametrize("status, body, final, code", [
    pytest.param(400, load_data("cf_error_5006.json"), 400, None, id="5006"),
    pytest.param(400, load_data("cf_error_5007.json"), 404, "model_not_found", id="5007-on-400"),
    pytest.param(404, load_data("cf_error_5007.json"), 404, "model_not_found", id="5007-on-404"),
    pytest.param(404, load_data("cf_error_7000.json"), 404, "model_not_found", id="7000"),
    pytest.param(429, load_data("cf_error_3036.json"), 429, "insufficient_quota", id="3036"),
])
def test_final_failure_is_never_retried(client, upstream, sleeps, status, body, final, code):
    add_failure(upstream, status, body)
    upstream.add(responses.POST, RUN_URL + MODEL, json=OK)
    rv = chat(client)
    assert_error(rv, final, code)
    assert len(upstream.calls) == 1
    assert sleeps == []


def test_retry_pauses_grow(client, upstream, sleeps):
    add_failure(upstream, 429, load_data("cf_error_3040.json"))
    chat(client)
    assert len(sleeps) == 2
    first, second = sleeps
    assert 0.125 <= first <= 0.25
    assert 0.25 <= second <= 0.5
    assert second >= first


@pytest.mark.parametrize("status, body", [
    pytest.param(429, load_data("cf_error_3040.json"), id="3040"),
    pytest.param(503, None, id="503"),
])
def test_retry_honours_retry_after(client, upstream, sleeps, status, body):
    add_failure(upstream, status, body, headers={"Retry-After": "3"})
    chat(client)
    assert sleeps == [3.0, 3.0]


@pytest.mark.parametrize("config_class", [LowRetryAfterCap])
def test_retry_after_is_capped(client, upstream, sleeps):
    add_failure(upstream, 429, load_data("cf_error_3040.json"), headers={"Retry-After": "120"})
    chat(client)
    assert sleeps == [7.0, 7.0]


def test_retry_after_http_date_falls_back_to_schedule(client, upstream, sleeps):
    add_failure(upstream, 429, load_data("cf_error_3040.json"),
                headers={"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"})
    chat(client)
    assert len(sleeps) == 2
    assert all(s <= 0.5 for s in sleeps)


def test_retry_after_nan_does_not_break_request(client, upstream, sleeps):
    add_failure(upstream, 429, load_data("cf_error_3040.json"), headers={"Retry-After": "nan"})
    rv = chat(client)
    assert_error(rv, 429, "rate_limit_exceeded")
    assert all(0 <= s <= TestConfig.UPSTREAM_RETRY_AFTER_CAP for s in sleeps)


def test_no_retry_past_total_deadline(app, upstream, sleeps):
    add_failure(upstream, 429, load_data("cf_error_3040.json"), headers={"Retry-After": "5"})
    client = app.extensions["upstream"]
    with pytest.raises(APIError) as info:
        client.run(MODEL, {"messages": []}, deadline=time.monotonic() + 1.0)
    assert info.value.status == 429
    assert len(upstream.calls) == 1
    assert sleeps == []


# ---------------------------------------------------------------- several accounts


def test_requests_alternate_accounts(two, upstream):
    for account in (A1, A2):
        upstream.add(responses.POST, run_url(account), json=OK)
    for _ in range(4):
        assert chat(two).status_code == 200
    assert accounts_called(upstream) == [A1, A2, A1, A2]
    tokens = [call.request.headers["Authorization"] for call in upstream.calls]
    assert tokens == [f"Bearer {T1}", f"Bearer {T2}"] * 2


def assert_served_by_a2_at_once_and_a1_skipped(two, upstream, sleeps):
    """The first request moves from A1 to A2 without a pause; later ones skip A1."""
    rv = chat(two)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    assert accounts_called(upstream) == [A1, A2]
    assert sleeps == []
    for _ in range(3):
        assert chat(two).status_code == 200
    assert accounts_called(upstream)[2:] == [A2, A2, A2]


def test_quota_on_one_account_fails_over_at_once(two, upstream, sleeps):
    upstream.add(responses.POST, run_url(A1), status=429, json=load_data("cf_error_3036.json"))
    upstream.add(responses.POST, run_url(A2), json=OK)
    assert_served_by_a2_at_once_and_a1_skipped(two, upstream, sleeps)


@pytest.mark.parametrize("status", [401, 403])
def test_refused_token_fails_over_and_logs_account_not_token(two, upstream, sleeps, error_log,
                                                             status):
    upstream.add(responses.POST, run_url(A1), status=status, json=load_data("cf_error_10000.json"))
    upstream.add(responses.POST, run_url(A2), json=OK)
    assert_served_by_a2_at_once_and_a1_skipped(two, upstream, sleeps)
    messages = [record.getMessage() for record in error_log]
    assert any(A1 in message for message in messages)
    assert all(T1 not in message and T2 not in message for message in messages)


def test_refused_account_returns_after_cooldown(two, upstream, sleeps):
    pool = two.application.extensions["upstream"].pool
    now = [1_800_000_000.0]
    pool.clock = lambda: now[0]
    upstream.add(responses.POST, run_url(A1), status=401, json=load_data("cf_error_10000.json"))
    upstream.add(responses.POST, run_url(A2), json=OK)
    upstream.add(responses.POST, run_url(A1), json=OK)
    assert chat(two).status_code == 200
    now[0] += TwoAccounts.ACCOUNT_COOLDOWN - 1
    assert chat(two).status_code == 200
    assert chat(two).status_code == 200
    assert accounts_called(upstream) == [A1, A2, A2, A2]
    now[0] += 1
    assert chat(two).status_code == 200
    assert chat(two).status_code == 200
    assert A1 in accounts_called(upstream)[4:]


def test_transient_failure_retries_on_other_account(two, upstream, sleeps):
    upstream.add(responses.POST, run_url(A1), status=429, json=load_data("cf_error_3040.json"))
    upstream.add(responses.POST, run_url(A2), json=OK)
    rv = chat(two)
    assert rv.status_code == 200
    assert accounts_called(upstream) == [A1, A2]
    assert len(sleeps) == 1


def test_every_account_out_of_quota_is_429_not_to_retry(two, upstream, sleeps):
    for account in (A1, A2):
        upstream.add(responses.POST, run_url(account), status=429,
                     json=load_data("cf_error_3036.json"))
    for attempt in range(2):
        rv = chat(two)
        error = assert_error(rv, 429, "insufficient_quota")
        assert error["type"] == "insufficient_quota"
        assert rv.headers["x-should-retry"] == "false"
        assert "00:00 UTC" in error["message"]
    assert accounts_called(upstream) == [A1, A2]  # the second request made no call
    assert sleeps == []


def test_every_account_refused_is_502_then_503_with_retry_after(two, upstream, sleeps):
    for account in (A1, A2):
        upstream.add(responses.POST, run_url(account), status=401,
                     json=load_data("cf_error_10000.json"))
    assert_error(chat(two), 502, "upstream_auth_error")
    assert len(upstream.calls) == 2
    rv = chat(two)
    error = assert_error(rv, 503)
    assert int(rv.headers["Retry-After"]) > 0
    assert len(upstream.calls) == 2
    for secret in (A1, A2, T1, T2):
        assert secret not in error["message"]


def test_catalogue_pages_use_the_pool(two, upstream):
    upstream.add(responses.GET, f"{API_BASE}/accounts/{A1}/ai/models/search", status=401,
                 json=load_data("cf_error_10000.json"))
    upstream.add(responses.GET, f"{API_BASE}/accounts/{A2}/ai/models/search",
                 json=cf_ok([{"name": MODEL}]))
    records = two.application.extensions["upstream"].search_models()
    assert [r["name"] for r in records] == [MODEL]


# ---------------------------------------------------------------- not configured


@pytest.mark.parametrize("config_class", [NoAccount])
@pytest.mark.parametrize("method, path, body", [
    pytest.param("post", CHAT, BODY, id="chat"),
    pytest.param("post", "/v1/completions", {"model": MODEL, "prompt": "Hi"}, id="completions"),
    pytest.param("get", "/v1/models", None, id="models"),
])
def test_no_account_is_503_naming_the_variables(client, auth, upstream, method, path, body):
    rv = getattr(client, method)(path, headers=auth, json=body)
    error = assert_error(rv, 503, "cloudflare_not_configured")
    assert "CLOUDFLARE_ACCOUNT_ID" in error["message"]
    assert "CLOUDFLARE_API_TOKEN" in error["message"]
    assert len(upstream.calls) == 0


class SmallAnswers(NoRetries):
    UPSTREAM_MAX_BODY_BYTES = 4096


@pytest.mark.parametrize("config_class", [SmallAnswers])
@pytest.mark.parametrize("length_header", [True, False], ids=["content-length", "no-length"])
@pytest.mark.parametrize("status", [200, 500])
def test_answer_larger_than_upstream_max_body_bytes_is_502(client, auth, upstream, sleeps,
                                                           length_header, status):
    """A non-stream answer is read up to UPSTREAM_MAX_BODY_BYTES, never whole into memory."""
    big = b'{"result":{"response":"' + b"x" * 10000 + b'"},"success":true}'
    headers = {"Content-Length": str(len(big))} if length_header else {}
    upstream.add(responses.POST, RUN_URL + MODEL, body=big, status=status, headers=headers,
                 content_type="application/json")
    rv = client.post(CHAT, json=BODY, headers=auth)
    assert rv.status_code == 502, rv.get_data(as_text=True)
    validate_error(rv.get_json())
    if status == 200:
        assert rv.get_json()["error"]["code"] == "upstream_body_too_large"


@pytest.mark.parametrize("config_class", [SmallAnswers])
def test_answer_within_upstream_max_body_bytes_is_served(client, auth, upstream, sleeps):
    upstream.add(responses.POST, RUN_URL + MODEL, json=OK)
    assert client.post(CHAT, json=BODY, headers=auth).status_code == 200


@pytest.mark.parametrize("config_class", [NoRetries])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_compressed_answer_is_a_malformed_answer(client, auth, upstream, sleeps, stream, encoding):
    """The gateway asks for identity; an encoded body would be decoded past its read timeouts."""
    import gzip
    import json as jsonlib
    if stream:
        raw, kind = b'data: {"response":"hi"}\n\ndata: [DONE]\n\n', "text/event-stream"
    else:
        raw, kind = jsonlib.dumps(OK).encode(), "application/json"
    upstream.add(responses.POST, RUN_URL + MODEL, body=gzip.compress(raw), content_type=kind,
                 headers={"Content-Encoding": encoding})
    rv = client.post(CHAT, json={**BODY, "stream": stream}, headers=auth)
    assert rv.status_code == 502, rv.get_data(as_text=True)
    assert rv.get_json()["error"]["code"] == "upstream_malformed"
    assert upstream.calls[0].request.headers["Accept-Encoding"] == "identity"
