"""Self-tests of the fake Workers AI server (tests/fake_workers_ai.py).

The gateway's tests rely on the fake speaking the formats of the Workers AI REST API exactly,
so these tests pin them down over real HTTP with ``requests``. Each test runs in well under a
second.
"""
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests import fake_media
from tests.fake_workers_ai import DEFAULT_CATALOGUE, OPENAI_SHAPED_MODELS, FakeWorkersAI

CLASSIC = "@cf/meta/llama-3.1-8b-instruct"
OPENAI = "@cf/google/gemma-4-26b-a4b-it"
DATA = Path(__file__).parent / "data"
AUTH_ERROR = {"result": None, "success": False,
              "errors": [{"code": 10000, "message": "Authentication error"}], "messages": []}


@pytest.fixture(scope="module")
def server():
    with FakeWorkersAI(accounts={"acct-1": "tok-1", "acct-2": "tok-2"}) as fake:
        yield fake


@pytest.fixture
def fake(server):
    server.reset()
    yield server


@pytest.fixture
def fresh():
    """A fake of its own, for tests that count connections."""
    with FakeWorkersAI() as fake:
        yield fake


# -- helpers -----------------------------------------------------------------------------------

def run(fake, model=CLASSIC, /, account="acct-1", token="tok-1", stream_response=False, **body):
    """POST /ai/run/{model} with ``body`` as JSON (a ``model`` keyword goes into the body)."""
    return requests.post(f"{fake.base_url}/accounts/{account}/ai/run/{model}", json=body,
                         headers={"Authorization": f"Bearer {token}"}, timeout=10,
                         allow_redirects=False, stream=stream_response)


def chat(fake, text, model=CLASSIC, **kw):
    """Send one user message."""
    return run(fake, model, messages=[{"role": "user", "content": text}], **kw)


def search(fake, token="tok-1", **params):
    return requests.get(f"{fake.base_url}/accounts/acct-1/ai/models/search", params=params,
                        headers={"Authorization": f"Bearer {token}"}, timeout=10)


def sse_payloads(raw: bytes) -> list:
    """Split a raw SSE body into its ``data:`` payloads (checking the framing on the way)."""
    text = raw.decode("utf-8").replace("\r\n", "\n")
    assert text.endswith("\n\n")
    blocks = [b for b in text.split("\n\n") if b]
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks)
    return [b[len("data: "):] for b in blocks]


def stream_text(payloads) -> str:
    """Concatenate the text of classic or OpenAI-shaped events (numbers become strings)."""
    out = []
    for payload in payloads:
        if payload == "[DONE]":
            continue
        event = json.loads(payload)
        if event.get("choices"):
            value = event["choices"][0]["delta"].get("content")
        else:
            value = event.get("response")
        if value is not None:
            out.append(str(value))
    return "".join(out)


# -- auth, routes, catalogue -------------------------------------------------------------------

@pytest.mark.parametrize("account,token", [("acct-1", "wrong"), ("nope", "tok-1"),
                                           ("acct-2", "tok-1"), ("acct-1", None)])
def test_auth_errors(fake, account, token):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = requests.post(f"{fake.base_url}/accounts/{account}/ai/run/{CLASSIC}",
                      json={"prompt": "hi"}, headers=headers, timeout=5)
    assert r.status_code == 401
    assert r.json() == AUTH_ERROR
    assert search(fake, token="bad").status_code == 401


def test_unknown_route(fake):
    r = requests.get(f"{fake.base_url}/accounts/acct-1/ai/whatever", timeout=5)
    assert r.status_code == 404
    assert r.json()["errors"] == [{"code": 7000, "message": "No route for that URI"}]


def test_models_search_pages_and_filters(fake):
    p1 = search(fake, task="Text Generation", page=1, per_page=20).json()
    p2 = search(fake, task="Text Generation", page=2, per_page=20).json()
    assert p1["success"] is True and p1["errors"] == [] and p1["messages"] == []
    assert p1["result_info"] == {"page": 1, "per_page": 20, "count": 20, "total_count": 23}
    assert p2["result_info"]["count"] == 3 == len(p2["result"])
    names = [m["name"] for m in p1["result"] + p2["result"]]
    assert len(set(names)) == 23 and "@cf/baai/bge-base-en-v1.5" not in names
    everything = search(fake, per_page=500).json()
    assert everything["result_info"]["per_page"] == 50
    assert len(everything["result"]) == len(DEFAULT_CATALOGUE) == 25 + len(fake_media.MEDIA_MODELS)
    assert search(fake, page=9).json()["result"] == []


def test_catalogue_record_shapes():
    by_name = {m["name"]: m for m in DEFAULT_CATALOGUE}
    for record in DEFAULT_CATALOGUE:
        assert set(record) >= {"id", "source", "name", "description", "task", "tags",
                               "properties"}
        if "created_at" in record:
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", record["created_at"])
    props = {p["property_id"]: p["value"] for p in by_name[OPENAI]["properties"]}
    assert props["context_window"] == 128000
    mistral = by_name["@hf/thebloke/mistral-7b-instruct-v0.1-awq"]
    assert mistral["source"] == 2 and "created_at" not in mistral
    assert OPENAI_SHAPED_MODELS == {OPENAI, "@cf/zai-org/glm-4.7-flash"}


# -- non-stream replies and validation ---------------------------------------------------------

def test_classic_reply(fake):
    r = run(fake, messages=[{"role": "system", "content": "be nice"},
                            {"role": "user", "content": "hello world"}])
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json() == {"result": {"response": "Echo: hello world", "tool_calls": [],
                                   "usage": {"prompt_tokens": 7, "completion_tokens": 3,
                                             "total_tokens": 10}},
                        "success": True, "errors": [], "messages": []}
    assert run(fake, prompt="one two").json()["result"]["response"] == "Echo: one two"


def test_openai_shaped_reply(fake):
    body = chat(fake, "hello", model=OPENAI).json()
    result = body["result"]
    assert body["success"] is True
    assert re.fullmatch(r"[0-9a-f]{32}", result["id"])
    assert result["object"] == "chat.completion" and result["model"] == OPENAI + "-external"
    assert result["choices"] == [{"index": 0, "message": {"role": "assistant",
                                  "content": "Echo: hello", "reasoning_content": None},
                                  "finish_reason": "stop", "logprobs": None}]
    usage = result["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (4, 2, 6)
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0} and usage["neurons"] > 0


def test_max_tokens_and_directives(fake):
    r = chat(fake, "a b c d e", max_tokens=3).json()["result"]
    assert r["response"] == "Echo: a b" and r["usage"]["completion_tokens"] == 3
    r = chat(fake, "[[tokens=5]]").json()["result"]
    assert r["response"] == "t0 t1 t2 t3 t4"
    r = chat(fake, "[[tokens=300]]").json()["result"]  # default max_tokens is 256
    assert r["usage"]["completion_tokens"] == 256
    r = chat(fake, "[[tokens=9]]", model=OPENAI, max_tokens=50, max_completion_tokens=4)
    choice = r.json()["result"]["choices"][0]
    assert choice["message"]["content"] == "t0 t1 t2 t3" and choice["finish_reason"] == "length"


BAD_INPUTS = [
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, 5006,
     "AiError: Bad input: Error: oneOf at '/' not met, 0 matches: required properties at '/' "
     "are 'prompt', Type mismatch of '/messages/0/content', 'array' not in 'string'"),
    ({"prompt": "hi", "stream_options": {}}, 5006,
     "AiError: Bad input: Additional or unevaluated properties '/stream_options' at '/' not "
     "allowed"),
    ({"prompt": ""}, 5006, None),
    ({"max_tokens": 5}, 5006, None),
    ({"prompt": "hi", "max_tokens": "5"}, 5006, None),
]


@pytest.mark.parametrize("body,code,message", BAD_INPUTS)
def test_classic_bad_input(fake, body, code, message):
    r = run(fake, **body)
    assert r.status_code == 400
    payload = r.json()
    assert payload["success"] is False and payload["result"] == {} and payload["messages"] == []
    assert payload["errors"][0]["code"] == code
    if message:
        assert payload["errors"][0]["message"] == message


def test_unknown_model(fake):
    r = run(fake, "@cf/meta/llama-9", prompt="hi")
    assert r.status_code == 400
    assert r.json() == {"errors": [{"message": "No such model @cf/meta/llama-9 or task",
                                    "code": 5007}], "success": False, "result": {},
                        "messages": []}


def test_openai_shaped_models_are_lenient(fake):
    r = run(fake, OPENAI, model=OPENAI, n=1, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": [{"type": "text", "text": "parts"}]}])
    assert r.status_code == 200
    assert r.json()["result"]["choices"][0]["message"]["content"] == "Echo: parts"


def test_requests_are_recorded(fake):
    chat(fake, "hi", stream=False)
    search(fake, task="Text Generation")
    run_req, search_req = fake.requests
    assert (run_req.method, run_req.account, run_req.model) == ("POST", "acct-1", CLASSIC)
    assert run_req.path == f"/client/v4/accounts/acct-1/ai/run/{CLASSIC}"
    assert run_req.json["messages"][0]["content"] == "hi" and b'"hi"' in run_req.body
    assert run_req.headers["authorization"] == run_req.headers["Authorization"] == "Bearer tok-1"
    assert search_req.query == {"task": "Text Generation"} and search_req.model is None


# -- streams -----------------------------------------------------------------------------------

def test_classic_stream(fake):
    r = chat(fake, "[[tokens=8]]", stream=True)
    assert r.headers["Content-Type"] == "text/event-stream"
    assert r.headers["Transfer-Encoding"] == "chunked"
    payloads = sse_payloads(r.content)
    assert payloads[-1] == "[DONE]"
    events = [json.loads(p) for p in payloads[:-1]]
    assert events[0]["response"] == "" and events[0]["tool_calls"] == [] and events[0]["p"]
    assert any("response" not in e for e in events)  # the quirk: no "response" key at all
    assert events[-1] == {"response": "", "usage": {"prompt_tokens": 4, "completion_tokens": 8,
                                                    "total_tokens": 12}}
    assert stream_text(payloads) == "t0 t1 t2 t3 t4 t5 t6 t7"
    assert fake.wait_for(lambda f: f.streams_completed == 1 == f.streams_started)


def test_openai_shaped_stream(fake):
    payloads = sse_payloads(chat(fake, "hello world", model=OPENAI, stream=True).content)
    assert payloads[-1] == "[DONE]"
    events = [json.loads(p) for p in payloads[:-1]]
    chunks, final = events[:-1], events[-1]
    assert {(c["id"], c["created"], c["object"]) for c in chunks} == {
        (chunks[0]["id"], chunks[0]["created"], "chat.completion.chunk")}
    assert chunks[0]["choices"][0]["delta"] == {"content": "", "reasoning_content": None,
                                                "role": "assistant"}
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:4]] == ["Echo:", " hello",
                                                                          " world"]
    assert chunks[1]["usage"]["completion_tokens"] == 1  # incremental
    finish = chunks[4]["choices"][0]
    assert (finish["finish_reason"], finish["matched_stop"]) == ("stop", 106)
    assert chunks[5]["choices"] == []
    assert final["response"] == "" and final["usage"]["completion_tokens"] == 3
    assert final["usage"]["total_tokens"] == final["usage"]["prompt_tokens"] + 3


def test_stream_max_tokens_finish_length(fake):
    payloads = sse_payloads(chat(fake, "[[tokens=10]]", model=OPENAI, stream=True,
                                 max_tokens=4).content)
    finishes = [json.loads(p)["choices"][0]["finish_reason"] for p in payloads
                if p.startswith('{"choices":[{')]
    assert finishes[-1] == "length" and stream_text(payloads) == "t0 t1 t2 t3"


def test_keep_alive(fake):
    before = fake.connections_total
    with requests.Session() as session:
        for _ in range(3):
            r = session.post(f"{fake.base_url}/accounts/acct-1/ai/run/{CLASSIC}",
                             json={"prompt": "x", "stream": True},
                             headers={"Authorization": "Bearer tok-1"}, timeout=5)
            assert r.content.endswith(b"data: [DONE]\n\n")
    assert fake.connections_total == before + 1


def test_token_delay(fake):
    fake.token_delay = 0.05
    started = time.monotonic()
    chat(fake, "[[tokens=4]]", stream=True).content
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    chat(fake, "[[tokens=4]] [[delay=0]]", stream=True).content
    assert time.monotonic() - started < 0.2


# -- faults ------------------------------------------------------------------------------------

def test_error_fault_defaults_from_the_code_table(fake):
    fake.add_fault("error", code=3040)
    r = chat(fake, "hi")
    assert r.status_code == 429
    assert r.json() == {"errors": [{"message": "AiError: Capacity temporarily exceeded, please "
                                    "try again.", "code": 3040}], "success": False,
                        "result": {}, "messages": []}
    assert chat(fake, "hi").status_code == 200  # used up


def test_error_fault_options_times_and_filters(fake):
    fake.add_fault("error", times=2, model=OPENAI, status=400, code=3036, message="quota",
                   headers={"Retry-After": "7"})
    fake.add_fault("error", times=None, account="acct-2", code=10000)
    assert chat(fake, "hi").status_code == 200  # other model
    for _ in range(2):
        r = chat(fake, "hi", model=OPENAI)
        assert (r.status_code, r.headers["Retry-After"]) == (400, "7")
        assert r.json()["errors"] == [{"message": "quota", "code": 3036}]
    assert chat(fake, "hi", model=OPENAI).status_code == 200
    for _ in range(3):  # times=None: forever
        r = run(fake, account="acct-2", token="tok-2", prompt="hi")
        assert (r.status_code, r.json()["errors"][0]["code"]) == (401, 10000)


def test_faults_apply_in_order_one_per_request(fake):
    fake.add_fault("error", code=3040)
    fake.add_fault("error", code=3036)
    codes = [chat(fake, "x").json().get("errors") or [{"code": None}] for _ in range(3)]
    assert [c[0]["code"] for c in codes] == [3040, 3036, None]


def test_error_fault_raw_body(fake):
    fake.add_fault("error", status=400, body={"errors": [{"message": "x", "code": 3040}],
                                              "internalCode": 3040})
    assert chat(fake, "hi").json() == {"errors": [{"message": "x", "code": 3040}],
                                       "internalCode": 3040}


@pytest.mark.parametrize("kind,status,content_type,check", [
    ("http500", 500, "text/plain", lambda r: r.text == "Internal Server Error"),
    ("html", 502, "text/html; charset=UTF-8", lambda r: "<html>" in r.text),
    ("success_false", 200, "application/json",
     lambda r: r.json() == {"success": False, "result": None,
                            "errors": [{"code": 5000, "message": "Something failed"}]}),
    ("invalid_json", 200, "application/json", lambda r: pytest.raises(ValueError, r.json)),
    ("redirect", 302, None, lambda r: r.headers["Location"] == "http://127.0.0.1:1/elsewhere"),
])
def test_response_faults(fake, kind, status, content_type, check):
    fake.add_fault(kind)
    r = chat(fake, "hi", stream=True)
    assert r.status_code == status and r.headers.get("Content-Type") == content_type
    assert check(r)


def test_response_faults_on_models_search(fake):
    fake.add_fault("http500")
    fake.add_fault("error", model=CLASSIC)  # model-specific: never matches models/search
    assert search(fake).status_code == 500
    assert search(fake).status_code == 200


def test_slow_first_byte_and_first_byte_delay(fake):
    fake.add_fault("slow_first_byte", delay=0.2)
    started = time.monotonic()
    assert chat(fake, "hi").json()["result"]["response"] == "Echo: hi"
    assert time.monotonic() - started >= 0.2
    fake.first_byte_delay = 0.1
    started = time.monotonic()
    search(fake)
    assert time.monotonic() - started >= 0.1


def test_stall(fake):
    fake.add_fault("stall", after=3, delay=0.3)
    r = chat(fake, "[[tokens=3]]", stream=True, stream_response=True)
    stamps = [(time.monotonic(), line) for line in r.iter_lines() if line]
    gaps = [b[0] - a[0] for a, b in zip(stamps, stamps[1:])]
    # Seen from the client the pause can look a little shorter than the fake's 0.3 s: the
    # line before it may have been read late on a busy machine.
    assert gaps.index(max(gaps)) == 2 and max(gaps) >= 0.25
    assert stamps[-1][1] == b"data: [DONE]"


def test_stall_ends_when_the_client_leaves(fake):
    fake.add_fault("stall", after=1, delay=30)
    r = chat(fake, "hi", stream=True, stream_response=True)
    next(r.iter_lines())
    r.close()
    assert fake.wait_for(lambda f: f.streams_aborted == 1, timeout=2)


def test_reset(fresh):
    fresh.add_fault("reset", after=2)
    with pytest.raises((requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ConnectionError)):
        chat(fresh, "hello world", stream=True).content
    assert fresh.wait_for(lambda f: f.streams_aborted == 1 and f.open_connections == 0)


def test_malformed_event(fake):
    fake.add_fault("malformed_event", after=2)
    payloads = sse_payloads(chat(fake, "hello", stream=True).content)
    assert payloads[2] == "{not json" and payloads[-1] == "[DONE]"


def test_error_event(fake):
    fake.add_fault("error_event", after=2)
    payloads = sse_payloads(chat(fake, "hello world", stream=True).content)
    assert len(payloads) == 3
    assert json.loads(payloads[-1]) == {"error": {"message": "No capacity", "code": 3040},
                                        "success": False}


def test_json_for_stream(fake):
    fake.add_fault("json_for_stream")
    r = chat(fake, "hi", stream=True)
    assert r.headers["Content-Type"] == "application/json"
    assert r.json()["result"]["response"] == "Echo: hi"


def test_response_text_and_unwrapped(fake):
    fake.add_fault("response_text")
    fake.add_fault("unwrapped", model=OPENAI)
    chat(fake, "hi", stream=True)  # a stream request does not consume either
    assert chat(fake, "hi").json()["result"] == {
        "response_text": "Echo: hi",
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}
    bare = run(fake, OPENAI, prompt="hi").json()
    assert bare["object"] == "chat.completion" and "result" not in bare


def test_split(fake):
    fake.add_fault("split", seed=3)
    text = "héllo wörld ñandú 日本語のテキスト"
    r = chat(fake, text, stream=True, stream_response=True)
    chunks = list(r.raw.read_chunked())
    assert chunks and all(1 <= len(c) <= 7 for c in chunks)
    cut_inside_a_char = 0
    for chunk in chunks:
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError:
            cut_inside_a_char += 1
    assert cut_inside_a_char > 0
    assert stream_text(sse_payloads(b"".join(chunks))) == "Echo: " + text


def test_numeric_content(fake):
    fake.add_fault("numeric_content", times=2)
    classic = sse_payloads(chat(fake, "42 apples", stream=True).content)
    assert '"response":42,' in "".join(classic) and stream_text(classic) == "Echo: 42 apples"
    openai = sse_payloads(chat(fake, "7", model=OPENAI, stream=True).content)
    assert '"delta":{"content":7,' in "".join(openai) and stream_text(openai) == "Echo: 7"


def test_repeat_finish_double_done_crlf(fake):
    fake.add_fault("repeat_finish")
    fake.add_fault("double_done")
    fake.add_fault("crlf")
    raw = chat(fake, "hi", model=OPENAI, stream=True).content
    assert b"\r\n\r\n" in raw and b"}\n\n" not in raw
    payloads = sse_payloads(raw)
    assert payloads[-2:] == ["[DONE]", "[DONE]"]
    assert sum('"finish_reason":"stop"' in p for p in payloads) == 2


def test_unknown_fault_kind(fake):
    with pytest.raises(ValueError):
        fake.add_fault("nope")


# -- canned bodies in tests/data --------------------------------------------------------------

def _key_shapes(payloads):
    """The set of key sets of a stream's JSON events (ignoring values)."""
    return {tuple(sorted(json.loads(p))) for p in payloads if p != "[DONE]"}


def test_data_files_parse_and_match_the_fake(fake):
    for path in DATA.glob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))
    classic = sse_payloads((DATA / "cf_stream_classic.sse").read_bytes())
    openai = sse_payloads((DATA / "cf_stream_openai.sse").read_bytes())
    assert classic[-1] == openai[-1] == "[DONE]"
    reply = json.loads((DATA / "cf_chat_openai_ok.json").read_text(encoding="utf-8"))
    assert stream_text(openai) == reply["result"]["choices"][0]["message"]["content"]
    assert _key_shapes(classic) == _key_shapes(sse_payloads(chat(fake, "a b c d e f g h",
                                                                 stream=True).content))
    assert _key_shapes(openai) == _key_shapes(sse_payloads(chat(fake, "hi", model=OPENAI,
                                                                stream=True).content))
    page = json.loads((DATA / "cf_models_search_page1.json").read_text(encoding="utf-8"))
    assert {m["task"]["name"] for m in page["result"]} == {"Text Generation",
                                                           "Text Embeddings"}


# -- connections and concurrency ---------------------------------------------------------------

def test_abandoned_stream_is_closed_upstream(fresh):
    r = chat(fresh, "[[tokens=1000]] [[delay=0.01]]", stream=True, stream_response=True)
    lines = r.iter_lines()
    for _ in range(3):
        next(lines)
    assert fresh.open_connections == 1 and fresh.streams_started == 1
    r.close()
    assert fresh.wait_for(lambda f: f.streams_aborted == 1, timeout=2)
    assert fresh.wait_for(lambda f: f.open_connections == 0, timeout=2)
    assert fresh.streams_completed == 0


def test_50_concurrent_slow_streams(fake):
    def one(_):
        return stream_text(sse_payloads(chat(fake, "[[tokens=10]] [[delay=0.02]]",
                                             stream=True).content))

    started = time.monotonic()
    with ThreadPoolExecutor(50) as pool:
        texts = list(pool.map(one, range(50)))
    assert time.monotonic() - started < 3  # one after another would take 10 s
    assert texts == [" ".join(f"t{i}" for i in range(10))] * 50
    assert fake.wait_for(lambda f: f.streams_completed == 50)


def test_stop_ends_stalled_streams():
    fake = FakeWorkersAI().start()
    fake.add_fault("stall", after=1, delay=30)
    r = chat(fake, "hi", stream=True, stream_response=True)
    next(r.iter_lines())
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 2
    assert fake.streams_aborted == 1 or fake.wait_for(lambda f: f.streams_aborted == 1, 2)
    r.close()


# -- model schemas -----------------------------------------------------------------------------

def schema(fake, model, token="tok-1"):
    return requests.get(f"{fake.base_url}/accounts/acct-1/ai/models/schema",
                        params={"model": model}, headers={"Authorization": f"Bearer {token}"},
                        timeout=10)


@pytest.mark.parametrize("model, has", [
    pytest.param(CLASSIC, set(), id="classic-none"),
    pytest.param("@cf/meta/llama-3.3-70b-instruct-fp8-fast", {"tools", "response_format"},
                 id="classic-tools"),
    pytest.param("@cf/mistralai/mistral-small-3.1-24b-instruct", {"tools", "guided_json"},
                 id="guided-json"),
    pytest.param(OPENAI, {"tools", "tool_choice", "stop", "response_format", "n"}, id="openai"),
])
def test_model_schema_per_family(fake, model, has):
    r = schema(fake, model)
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True and set(body["result"]) == {"input", "output"}
    messages = [b for b in body["result"]["input"]["oneOf"] if "messages" in b["properties"]]
    assert has <= set(messages[0]["properties"])
    assert not ({"tools", "stop", "response_format", "image"} - has) & set(
        messages[0]["properties"])


def test_model_schema_unknown_model_and_auth(fake):
    r = schema(fake, "@cf/nobody/nothing")
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == 5007
    # embedding, image and speech models have their schemas too (tests/fake_media.py)
    assert schema(fake, "@cf/baai/bge-base-en-v1.5").json()["result"]["input"]["required"] == [
        "text"]
    assert schema(fake, CLASSIC, token="bad").status_code == 401


def test_model_schema_faults_and_overrides(fake):
    fake.add_fault("http500", model=CLASSIC)
    assert schema(fake, CLASSIC).status_code == 500
    assert schema(fake, CLASSIC).status_code == 200
    fake.schemas[CLASSIC] = {"input": {"type": "object"}, "output": {}}
    try:
        assert schema(fake, CLASSIC).json()["result"]["input"] == {"type": "object"}
    finally:
        fake.schemas.clear()
    assert fake.requests[-1].query == {"model": CLASSIC}


# -- model families ----------------------------------------------------------------------------

TOOL = {"type": "function", "function": {"name": "f", "description": "", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "description": ""}}}}}


@pytest.mark.parametrize("model, body, code_or_calls", [
    pytest.param("@cf/meta/llama-3.3-70b-instruct-fp8-fast", {"tools": [TOOL]},
                 [{"name": "f", "arguments": {"city": "London"}}], id="classic-call"),
    pytest.param("@cf/meta/llama-3.3-70b-instruct-fp8-fast", {"stop": ["x"]}, 5006,
                 id="classic-refuses-stop"),
    pytest.param("@cf/meta/llama-3.3-70b-instruct-fp8-fast",
                 {"response_format": {"type": "json_object"}, "stream": True}, 5006,
                 id="classic-json-mode-cannot-stream"),
    pytest.param("@cf/meta/llama-3.3-70b-instruct-fp8-fast",
                 {"tools": [{"type": "function", "function": {"name": "f"}}]}, 5006,
                 id="classic-needs-descriptions"),
    pytest.param(CLASSIC, {"tools": [TOOL]}, 5006, id="plain-model-refuses-tools"),
])
def test_family_answers_and_validation(fake, model, body, code_or_calls):
    r = run(fake, model, messages=[{"role": "user", "content": "hi"}], **body)
    if isinstance(code_or_calls, int):
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == code_or_calls
    else:
        assert r.json()["result"]["tool_calls"] == code_or_calls


def test_family_json_mode_answers_an_object_or_fails(fake):
    model = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
    fmt = {"type": "json_schema", "json_schema": {"type": "object", "properties": {
        "n": {"type": "integer"}}}}
    r = run(fake, model, messages=[{"role": "user", "content": "hi"}], response_format=fmt)
    assert r.json()["result"]["response"] == {"n": 42}
    r = run(fake, model, messages=[{"role": "user", "content": "[[json_fail]]"}],
            response_format=fmt)
    assert r.status_code == 400 and "JSON Mode couldn't be met" in r.json()["errors"][0]["message"]
