"""The per-key check's admission and settlement (gateway/state/guard.py, limits.py).

What a request is charged when it ends (a stream the client left is charged what it was
relayed, not what Cloudflare generated), and admission estimates that stay within what
both stores hold exactly, whatever `max_tokens` a client sends.
"""
import time

import pytest
import responses

from gateway import create_app
from gateway.ops.request_log import RequestStats
from gateway.state import guard, limits
from gateway.state.keys import create_key
from gateway.state.store import Limits, Ticket, since
from tests.conftest import MODEL, RUN_URL, SEARCH_URL, TestConfig, cf_ok, load_data
from tests.openai_spec import validate_error

CHAT = "/v1/chat/completions"
STREAM = (b'data: {"response":"a"}\n\ndata: {"response":"b"}\n\ndata: {"response":"c"}\n\n'
          b'data: {"response":"","usage":{"prompt_tokens":9,"completion_tokens":61,'
          b'"total_tokens":70}}\n\ndata: [DONE]\n\n')


class Recorder:
    """A store that keeps what `settle` was asked to charge."""

    def __init__(self):
        self.charged = []

    def settle(self, ticket, prompt_tokens, completion_tokens, model):
        self.charged.append((prompt_tokens, completion_tokens))


def stats(**figures):
    return RequestStats(**figures)


@pytest.mark.parametrize("figures, charged", [
    pytest.param({}, (0, 0), id="nothing-came-back"),
    pytest.param({"prompt_tokens": 7, "completion_tokens": 5}, (7, 5), id="json-answer"),
    pytest.param({"prompt_tokens": 9, "completion_tokens": 61, "streamed_tokens": 61,
                  "stream_complete": True}, (9, 61), id="stream-read-to-the-end"),
    pytest.param({"prompt_tokens": 9, "completion_tokens": 61, "streamed_tokens": 4,
                  "stream_complete": False}, (9, 4), id="left-after-cloudflares-usage-came"),
    pytest.param({"streamed_tokens": 4, "stream_complete": False}, (30, 4),
                 id="left-mid-stream"),
    pytest.param({"stream_complete": False}, (0, 0), id="left-before-any-content"),
])
def test_settle_charges_what_the_client_received(figures, charged):
    store = Recorder()
    ticket = Ticket(key_hash="h", name="n", limits=Limits(), estimate=300, now=time.time(),
                    id="t")
    guard.settle(store, ticket, stats(**figures), prompt_estimate=30)
    assert store.charged == [charged]


@pytest.fixture
def app(store_url):
    class Config(TestConfig):
        STATE_URL = store_url
    return create_app(Config)


@pytest.fixture
def cloudflare(upstream):
    upstream.add(responses.GET, SEARCH_URL, json=load_data("cf_models_search_page1.json"))
    return upstream


@pytest.mark.parametrize("taken, charged", [
    pytest.param(2, (0, 0), id="content-write-failed"),
    pytest.param(3, (9, 3), id="last-event-write-failed"),
    pytest.param(None, (9, 61), id="read-to-the-end"),
])
def test_a_stream_is_charged_what_it_relayed(app, cloudflare, taken, charged):
    """The relay writes the role chunk, the content (one upstream read here), then the end
    with Cloudflare's usage. A client gone when a write fails is charged what it got."""
    cloudflare.add(responses.POST, RUN_URL + MODEL, body=STREAM,
                   content_type="text/event-stream")
    store = app.extensions["state"]
    secret, _ = create_key(store, {"name": "leaver", "tpm": 100000})
    rv = app.test_client().post(
        CHAT, json={"model": MODEL, "stream": True, "max_tokens": 100,
                    "messages": [{"role": "user", "content": "Hello"}]},
        headers={"Authorization": f"Bearer {secret}"}, buffered=False)
    assert rv.status_code == 200
    items = iter(rv.response)
    got = [next(items) for _ in range(taken)] if taken else list(items)
    rv.close()
    assert len(got) == (taken or 3)
    [row] = store.usage(since(1), "leaver")
    assert (row["prompt_tokens"], row["completion_tokens"]) == charged


@pytest.mark.parametrize("max_tokens", [2**53, 2**63, 2**64 - 1],
                         ids=["2^53", "2^63", "2^64-1"])
def test_a_huge_max_tokens_keeps_the_limits_and_the_store(app, cloudflare, max_tokens):
    """The estimate is bounded before it is booked: SQLite refused a 2^63 estimate (a 500)
    and Redis' Lua script failed on it, which took the store out for every key (served
    without limits) instead of counting this request."""
    usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    cloudflare.add(responses.POST, RUN_URL + MODEL,
                   json=cf_ok({"response": "hi", "usage": usage}))
    store = app.extensions["state"]
    secret, _ = create_key(store, {"name": "greedy", "tpm": 1000})
    client = app.test_client()
    auth = {"Authorization": f"Bearer {secret}"}

    def chat(**extra):
        rv = client.post(CHAT, json={"model": MODEL, **extra, "messages": [
            {"role": "user", "content": "Hello"}]}, headers=auth)
        rv.get_data()
        rv.close()
        return rv

    first = chat(max_tokens=max_tokens)
    body = first.get_json()
    if first.status_code != 200:  # Cloudflare's or the route's refusal, never a 500
        assert first.status_code == 400, body
        validate_error(body)
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    assert store.available, "the store was not taken out"
    second = chat(max_tokens=20)
    assert second.status_code == 200 and second.headers["x-ratelimit-remaining-tokens"]


@pytest.mark.parametrize("body, expected", [
    pytest.param({"max_tokens": 2**63}, 2**31 - 1, id="max_tokens-2^63"),
    pytest.param({"max_completion_tokens": 2**70}, 2**31 - 1, id="beyond-64-bits"),
    pytest.param({"max_tokens": 100, "prompt": "x" * 400}, 200, id="ordinary"),
])
def test_estimate_is_bounded(body, expected):
    assert limits.estimate(body, 256) == expected



def test_a_body_the_per_key_check_read_gets_the_same_depth_check(app):
    """The per-key check parses the body first, for the route too; the route must still
    refuse one it could not write upstream (orjson writes 255 levels), as it does when it
    parses the body itself (API_KEYS keys)."""
    from gateway.errors import InvalidRequestError
    from gateway.openai.generation import parse_body
    raw = (b'{"model": "m", "messages": [], "tools": [{"type": "function", "function": '
           b'{"name": "f", "parameters": ' + b'{"a": ' * 300 + b"{}" + b"}" * 300 + b"}}]}")
    with app.test_request_context(CHAT, method="POST", data=raw,
                                  content_type="application/json"):
        model, body = guard._body()
        assert model == "m" and body["tools"]
        with pytest.raises(InvalidRequestError, match="nested more than"):
            parse_body()
