"""End to end: real gunicorn + gevent gateway, the fake Workers AI server, the official OpenAI SDK.

Every body, chunk and error is also read raw and checked against OpenAI's published
schemas, since the SDK is lenient about extra or missing fields.
"""
import json
import time

import openai
import pytest
import requests

from tests.fake_workers_ai import FakeWorkersAI
from tests.openai_spec import (validate_chat_chunk, validate_chat_completion, validate_completion,
                               validate_completion_chunk, validate_error, validate_models_list)
from tests.servers import run_gateway
from tests.sse_client import read_events, text_of

KEY = "sk-e2e-client-key-0123456789"
TOKEN = "cf-e2e-token-abcdef987654"
ACCOUNT = "acct-e2e-1"
CLASSIC = "@cf/meta/llama-3.1-8b-instruct"
SHAPED = "@cf/google/gemma-4-26b-a4b-it"


@pytest.fixture(scope="module")
def fake():
    with FakeWorkersAI(accounts={ACCOUNT: TOKEN}) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("e2e") / "gateway.log"
    settings = {"API_KEYS": f"{KEY},sk-other", "CLOUDFLARE_ACCOUNT_ID": ACCOUNT,
                "CLOUDFLARE_API_TOKEN": TOKEN, "CLOUDFLARE_API_BASE": fake.base_url,
                "ACCOUNT_COOLDOWN": "0", "UPSTREAM_RETRIES": "0"}
    with run_gateway(settings, log_path, workers=2) as (base_url, _):
        yield base_url, log_path
    log = log_path.read_text(errors="replace")
    assert KEY not in log and TOKEN not in log, "a secret reached the gateway log"
    for prompt in ("stream me please", "number 42 here", "hello there"):
        assert prompt not in log, "prompt text reached the gateway log"
    assert "MonkeyPatchWarning" not in log and "Traceback" not in log, log


@pytest.fixture(autouse=True)
def clean_fake(fake):
    fake.reset()
    yield


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=f"{gateway[0]}/v1", api_key=KEY, max_retries=0, timeout=30)


@pytest.fixture
def http(gateway):
    """Raw HTTP to the gateway with the key, for schema checks of the exact bytes."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {KEY}"
    session.base = gateway[0] + "/v1"
    return session


def chat(http, **body):
    return http.post(f"{http.base}/chat/completions", json=body, stream=bool(body.get("stream")))


def test_models_list_holds_the_served_tasks_models(client, http):
    ids = [model.id for model in client.models.list()]
    assert CLASSIC in ids and SHAPED in ids
    assert "@cf/baai/bge-base-en-v1.5" in ids  # Text Embeddings are served too (issue 12)
    assert len(ids) > 20  # two catalogue pages
    rv = http.get(f"{http.base}/models")
    validate_models_list(rv.json())
    entry = next(m for m in rv.json()["data"] if m["id"] == CLASSIC)
    assert entry["owned_by"] == "cloudflare" and entry["root"] == CLASSIC
    assert entry["metadata"]["task"] == "Text Generation" and entry["created"] > 1_600_000_000


def test_model_retrieve_by_id_with_slashes(client):
    assert client.models.retrieve(CLASSIC).id == CLASSIC
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("@cf/nobody/nothing")


@pytest.mark.parametrize("model", [CLASSIC, SHAPED])
def test_chat_completion(client, http, model):
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello there"}])
    assert completion.choices[0].message.content == "Echo: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 3 and completion.usage.prompt_tokens > 0
    rv = chat(http, model=model, messages=[{"role": "user", "content": "hello there"}])
    validate_chat_completion(rv.json())
    assert rv.json()["model"] == model and rv.headers["X-Request-ID"]


def test_chat_completion_reports_length(client):
    completion = client.chat.completions.create(
        model=CLASSIC, max_tokens=2, messages=[{"role": "user", "content": "one two three"}])
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "Echo: one"


@pytest.mark.parametrize("model", [CLASSIC, SHAPED])
def test_chat_stream_with_usage(client, http, model):
    messages = [{"role": "user", "content": "stream me please"}]
    stream = client.chat.completions.create(model=model, messages=messages, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Echo: stream me please"
    assert chunks[-1].usage.completion_tokens == 4 and chunks[-1].choices == []
    rv = chat(http, model=model, messages=messages, stream=True,
              stream_options={"include_usage": True})
    assert rv.headers["Content-Type"].startswith("text/event-stream")
    assert rv.headers["Cache-Control"] == "no-cache" and rv.headers["X-Accel-Buffering"] == "no"
    events = read_events(rv)
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        validate_chat_chunk(event)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert len({e["id"] for e in events[:-1]}) == 1
    assert [e["choices"][0]["finish_reason"] for e in events[:-1] if e["choices"]].count("stop") == 1


def test_completions(client, http):
    completion = client.completions.create(model=CLASSIC, prompt="say this")
    assert completion.choices[0].text == "Echo: say this"
    rv = http.post(f"{http.base}/completions", json={"model": CLASSIC, "prompt": ["say this"]})
    validate_completion(rv.json())
    stream = client.completions.create(model=CLASSIC, prompt="say this", stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == "Echo: say this"
    rv = http.post(f"{http.base}/completions", stream=True,
                   json={"model": CLASSIC, "prompt": "say this", "stream": True,
                         "stream_options": {"include_usage": True}})
    events = read_events(rv)
    for event in events[:-1]:
        if event["choices"]:
            validate_completion_chunk(event, allow_null_finish_reason=True)
    assert events[-2]["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize("kind", ["split", "numeric_content", "repeat_finish", "double_done",
                                  "crlf", "json_for_stream"])
@pytest.mark.parametrize("model", [CLASSIC, SHAPED])
def test_stream_quirks_do_not_change_what_the_client_sees(fake, http, kind, model):
    messages = [{"role": "user", "content": "number 42 here"}]
    expected = read_events(chat(http, model=model, messages=messages, stream=True))
    fake.add_fault(kind)
    events = read_events(chat(http, model=model, messages=messages, stream=True))
    assert text_of(events) == text_of(expected) == "Echo: number 42 here"
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        validate_chat_chunk(event)
    finals = [e for e in events[:-1] if e["choices"] and e["choices"][0]["finish_reason"]]
    assert len(finals) == 1


def test_sdk_typed_errors(fake, client, gateway):
    bad_key = openai.OpenAI(base_url=f"{gateway[0]}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad_key.models.list()
    assert info.value.code == "invalid_api_key"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=CLASSIC, temperature=9,
                                       messages=[{"role": "user", "content": "x"}])
    assert info.value.param == "temperature"
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="@cf/nobody/nothing",
                                       messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"
    fake.add_fault("error", code=3040)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=CLASSIC, messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "rate_limit_exceeded"


@pytest.mark.parametrize("fault, status", [
    pytest.param({"kind": "error", "code": 10000}, 502, id="cloudflare-token-refused"),
    pytest.param({"kind": "error", "code": 5006}, 400, id="bad-input"),
    pytest.param({"kind": "http500"}, 502, id="http-500"),
    pytest.param({"kind": "html"}, 502, id="html-page"),
    pytest.param({"kind": "success_false"}, 502, id="success-false"),
    pytest.param({"kind": "invalid_json"}, 502, id="invalid-json"),
    pytest.param({"kind": "redirect"}, 502, id="redirect"),
    pytest.param({"kind": "error", "code": 3006}, 413, id="too-large"),
    pytest.param({"kind": "error", "code": 3007}, 504, id="timeout"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors_are_openai_errors(fake, http, fault, status, stream):
    options = dict(fault)
    fake.add_fault(options.pop("kind"), **options)
    rv = chat(http, model=CLASSIC, messages=[{"role": "user", "content": "x"}], stream=stream)
    assert rv.status_code == status
    validate_error(rv.json())
    assert TOKEN not in rv.text and ACCOUNT not in rv.text and fake.base_url not in rv.text


def test_error_event_mid_stream_raises_api_error(fake, client):
    fake.add_fault("error_event", after=3)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
                model=CLASSIC, stream=True, messages=[{"role": "user", "content": "a b c d e"}]):
            pass


def test_nothing_unknown_is_forwarded(fake, http):
    rv = chat(http, model=CLASSIC, messages=[{"role": "developer", "content": "be brief"},
                                             {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
              user="u1", metadata={"a": "b"}, store=False, foo="bar")
    assert rv.status_code == 200, rv.text
    sent = [r for r in fake.requests if r.method == "POST"][-1]
    assert set(sent.json) == {"messages", "max_tokens", "temperature"}
    assert sent.json["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"


def _served_chat_requests(base_url):
    """Sum of gateway_requests_total for 200 chat answers, over every worker's samples."""
    text = requests.get(f"{base_url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("gateway_requests_total{") and 'route="/v1/chat/completions"' in line \
                and 'status="200"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_merge_workers_and_logs_are_json(gateway, http):
    before = _served_chat_requests(gateway[0])
    for _ in range(12):  # new connections each time: both workers get some
        requests.post(f"{http.base}/chat/completions", headers=http.headers, timeout=10,
                      json={"model": CLASSIC, "messages": [{"role": "user", "content": "count me"}]})
    # A request is counted when its response has been closed, just after its last byte went
    # out: on a busy machine the client can be faster than the worker's close callback.
    deadline = time.monotonic() + 10
    while _served_chat_requests(gateway[0]) - before < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _served_chat_requests(gateway[0]) - before == 12
    text = requests.get(f"{gateway[0]}/metrics", timeout=5).text
    assert "gateway_tokens_total" in text and "gateway_open_streams" in text
    lines = [line for line in gateway[1].read_text().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    served = [r for r in records if r.get("path") == "/v1/chat/completions" and r["status"] == 200]
    assert len({r["request_id"] for r in served}) == len(served)
    assert served[-1]["model"] == CLASSIC and served[-1]["account"] == 0
    assert served[-1]["completion_tokens"] == 3 and served[-1]["key"] and KEY not in lines[-1]
    streams = [r for r in records if r.get("stream") and r["status"] == 200]
    assert any(r["ttfb_ms"] is not None and r["ttft_ms"] is not None for r in streams)


def test_readyz_and_healthz_need_no_key(gateway):
    assert requests.get(f"{gateway[0]}/healthz", timeout=5).json() == {"status": "ok"}
    assert requests.get(f"{gateway[0]}/readyz", timeout=5).status_code == 200


def test_stream_request_answered_with_empty_json_is_asked_again_without_stream(fake, http):
    """Some models (GPT-OSS) do not stream on /ai/run and answer JSON with an empty result."""
    fake.add_fault("error", status=200, body={"result": {}, "success": True, "errors": [],
                                              "messages": []})
    events = read_events(chat(http, model=CLASSIC, stream=True,
                              messages=[{"role": "user", "content": "fallback please"}]))
    assert text_of(events) == "Echo: fallback please" and events[-1] == "[DONE]"
    posts = [r.json for r in fake.requests if r.method == "POST"]
    assert [p.get("stream", False) for p in posts] == [True, False]


def test_streams_reuse_their_upstream_connection(fake, http):
    """A complete stream hands its connection back to the pool (keep-alive to Cloudflare)."""
    def stream_once():
        events = read_events(chat(http, model=CLASSIC, stream=True,
                                  messages=[{"role": "user", "content": "reuse me"}]))
        assert text_of(events) == "Echo: reuse me"
    stream_once()  # may open a connection for this worker
    before = fake.connections_total
    for _ in range(10):
        stream_once()
    # two workers: at most one new upstream connection each, not one per stream
    assert fake.connections_total - before <= 2


def test_stream_request_answered_with_neither_sse_nor_json_is_a_502(fake, http):
    fake.add_fault("html", status=200)
    rv = chat(http, model=CLASSIC, stream=True, messages=[{"role": "user", "content": "x"}])
    assert rv.status_code == 502
    validate_error(rv.json())
