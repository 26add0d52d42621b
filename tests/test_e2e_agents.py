"""End to end for agents and structured output: tools, JSON mode, stop, images, reasoning.

The real gateway (gunicorn + gevent) in front of the fake Workers AI, whose model
families answer like Cloudflare's (tests/fake_model_behaviour.py), driven by the
official `openai` SDK (its stream helper and `parse` included) and LangChain's
`ChatOpenAI`; every body and chunk read raw is checked against OpenAI's schemas.
"""
import base64
import http.server
import json
import threading

import openai
import pytest
import requests
from pydantic import BaseModel

from tests.fake_model_families import EXTRA_MODELS
from tests.fake_workers_ai import DEFAULT_CATALOGUE, FakeWorkersAI
from tests.openai_spec import validate_chat_chunk, validate_chat_completion, validate_error
from tests.servers import run_gateway
from tests.sse_client import read_events

KEY = "sk-e2e-agents-key-0123456789"
TOKEN = "cf-e2e-agents-token-abcdef"
ACCOUNT = "acct-agents"
CLASSIC = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"  # tools + bare JSON mode
SCOUT = "@cf/meta/llama-4-scout-17b-16e-instruct"  # {id, function{arguments: object}} calls
GUIDED = "@cf/mistralai/mistral-small-3.1-24b-instruct"  # guided_json, image parts
HYBRID = "@cf/qwen/qwen3-30b-a3b-fp8"  # classic input, OpenAI-shaped output
SHAPED = "@cf/zai-org/glm-4.7-flash"  # OpenAI-shaped, reasoning_effort
GEMMA = "@cf/google/gemma-4-26b-a4b-it"  # OpenAI-shaped with vision parts
VISION = "@cf/meta/llama-3.2-11b-vision-instruct"  # top-level image
PLAIN = "@cf/meta/llama-3.1-8b-instruct"  # none of these
HERMES = "@hf/nousresearch/hermes-2-pro-mistral-7b"
TOOL_FAMILIES = [CLASSIC, SCOUT, HYBRID, SHAPED]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGA"
                       "WjR9awAAAABJRU5ErkJggg==")
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


class Person(BaseModel):
    name: str
    age: int


@pytest.fixture(scope="module")
def fake():
    with FakeWorkersAI(accounts={ACCOUNT: TOKEN}, models=DEFAULT_CATALOGUE + EXTRA_MODELS) as f:
        yield f


def _settings(fake, **extra):
    return {"API_KEYS": KEY, "CLOUDFLARE_ACCOUNT_ID": ACCOUNT, "CLOUDFLARE_API_TOKEN": TOKEN,
            "CLOUDFLARE_API_BASE": fake.base_url, "UPSTREAM_RETRIES": "0", **extra}


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    log = tmp_path_factory.mktemp("agents") / "gateway.log"
    with run_gateway(_settings(fake), log, workers=1) as (base_url, _):
        yield base_url
    text = log.read_text(errors="replace")
    assert KEY not in text and TOKEN not in text and "Traceback" not in text, text


@pytest.fixture(autouse=True)
def clean(fake):
    fake.reset()


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0, timeout=30)


def raw(gateway, **body):
    return requests.post(f"{gateway}/v1/chat/completions", json=body, timeout=30,
                         headers={"Authorization": f"Bearer {KEY}"},
                         stream=bool(body.get("stream")))


def runs(fake):
    return [r for r in fake.requests if "/ai/run/" in r.path]


def calls_of(message):
    return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls]


# -- capabilities ----------------------------------------------------------------------------

@pytest.mark.parametrize("model, expected", [
    pytest.param(CLASSIC, {"tools": True, "json_mode": True, "vision": False}, id="classic"),
    pytest.param(SHAPED, {"tools": True, "json_mode": True, "reasoning": True}, id="shaped"),
    pytest.param(VISION, {"vision": True, "json_mode": False}, id="vision"),
    pytest.param(PLAIN, {"tools": False, "json_mode": False, "vision": False}, id="plain"),
])
def test_model_shows_its_capabilities(client, model, expected):
    capabilities = client.models.retrieve(model).model_extra["metadata"]["capabilities"]
    assert {k: capabilities[k] for k in expected} == expected
    assert capabilities["stop"] is True and capabilities["streaming"] is True


# -- tools -----------------------------------------------------------------------------------

@pytest.mark.parametrize("model", TOOL_FAMILIES)
def test_tool_round_trip(client, gateway, fake, model):
    messages = [{"role": "user", "content": "What is the weather in London?"}]
    first = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert calls_of(choice.message) == [("get_weather", {"city": "London"})]
    assert choice.message.tool_calls[0].id
    call = choice.message.tool_calls[0]
    messages += [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    final = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
    assert final.choices[0].message.content == "Result: sunny, 21 C"
    assert final.choices[0].finish_reason == "stop"
    sent = runs(fake)[-1].json
    assert sent["messages"][-1]["tool_call_id"] and sent["messages"][1]["tool_calls"]
    body = raw(gateway, model=model, messages=messages[:1], tools=[WEATHER]).json()
    validate_chat_completion(body)


@pytest.mark.parametrize("model", TOOL_FAMILIES)
def test_tool_stream_matches_the_non_stream_call(client, gateway, model):
    messages = [{"role": "user", "content": "Weather in London and Paris? [[calls=2]]"}]
    whole = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
    with client.chat.completions.stream(model=model, messages=messages,
                                        tools=[WEATHER]) as stream:
        final = stream.get_final_completion()
    assert calls_of(final.choices[0].message) == calls_of(whole.choices[0].message)
    assert len(final.choices[0].message.tool_calls) == 2
    assert final.choices[0].finish_reason == "tool_calls"
    ids = [c.id for c in final.choices[0].message.tool_calls]
    assert len(set(ids)) == 2
    events = read_events(raw(gateway, model=model, messages=messages, tools=[WEATHER],
                             stream=True, stream_options={"include_usage": True}))
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    for event in events[:-1]:
        validate_chat_chunk(event)
    deltas = [c for e in events[:-1] for ch in e["choices"] for c in
              ch["delta"].get("tool_calls") or []]
    firsts = [d for d in deltas if "id" in d]
    assert [d["index"] for d in firsts] == [0, 1]
    assert all(d["function"]["name"] == "get_weather" and d["type"] == "function"
               for d in firsts)
    finishes = [ch["finish_reason"] for e in events[:-1] for ch in e["choices"]
                if ch["finish_reason"]]
    assert finishes == ["tool_calls"] and events[-2]["usage"] is not None


def test_tool_schema_nested_too_deep_is_refused_not_a_500(gateway, fake):
    parameters = {"type": "object"}
    for _ in range(300):
        parameters = {"type": "object", "properties": {"a": parameters}}
    rv = raw(gateway, model=CLASSIC, messages=[{"role": "user", "content": "Hi"}],
             tools=[{"type": "function", "function": {"name": "f", "parameters": parameters}}])
    assert rv.status_code == 400, rv.text
    validate_error(rv.json())
    assert not runs(fake)


def test_classic_tools_go_in_the_schema_form(client, fake):
    client.chat.completions.create(model=CLASSIC, tools=[{"type": "function", "function": {
        "name": "now", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}],
        messages=[{"role": "user", "content": "time?"}])
    tool = runs(fake)[-1].json["tools"][0]["function"]
    assert tool["description"] == "" and tool["parameters"]["properties"]["tz"]["description"] == ""


def test_tool_choice_named_on_model_without_tool_choice_sends_only_that_tool(client, fake):
    other = {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {}}}}
    completion = client.chat.completions.create(
        model=CLASSIC, messages=[{"role": "user", "content": "hi"}], tools=[other, WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert calls_of(completion.choices[0].message)[0][0] == "get_weather"
    sent = runs(fake)[-1].json
    assert "tool_choice" not in sent and [t["function"]["name"] for t in sent["tools"]] == [
        "get_weather"]


def test_tool_choice_none_sends_no_tools(client, fake):
    completion = client.chat.completions.create(
        model=CLASSIC, messages=[{"role": "user", "content": "hi"}], tools=[WEATHER],
        tool_choice="none")
    assert completion.choices[0].message.content == "Echo: hi"
    assert "tools" not in runs(fake)[-1].json


def test_forced_call_written_as_text_is_salvaged(client):
    completion = client.chat.completions.create(
        model=SHAPED, messages=[{"role": "user", "content": "go [[quirk=text_call]]"}],
        tools=[WEATHER], tool_choice="required", stream=False)
    assert calls_of(completion.choices[0].message) == [("get_weather", {"city": "London"})]
    assert completion.choices[0].finish_reason == "tool_calls"


def test_legacy_functions_become_tools(client, fake):
    completion = client.chat.completions.create(
        model=SHAPED, messages=[{"role": "user", "content": "go"}],
        functions=[WEATHER["function"]], function_call={"name": "get_weather"})
    assert completion.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert runs(fake)[-1].json["tool_choice"] == {"type": "function",
                                                  "function": {"name": "get_weather"}}


@pytest.mark.parametrize("model", [CLASSIC, SHAPED])
def test_legacy_functions_are_answered_as_function_call(client, gateway, model):
    from langchain_core.output_parsers.openai_functions import JsonOutputFunctionsParser
    from langchain_openai import ChatOpenAI

    legacy = {"functions": [WEATHER["function"]], "function_call": {"name": "get_weather"}}
    messages = [{"role": "user", "content": "Weather in London?"}]
    completion = client.chat.completions.create(model=model, messages=messages, **legacy)
    choice = completion.choices[0]
    assert choice.finish_reason == "function_call"
    assert (choice.message.function_call.name, json.loads(
        choice.message.function_call.arguments)) == ("get_weather", {"city": "London"})
    events = read_events(raw(gateway, model=model, messages=messages, stream=True, **legacy))
    for event in events[:-1]:
        validate_chat_chunk(event)
    calls = [c["delta"]["function_call"] for e in events[:-1] for c in e["choices"]
             if c["delta"].get("function_call")]
    assert calls[0]["name"] == "get_weather"
    assert json.loads("".join(c["arguments"] for c in calls)) == {"city": "London"}
    llm = ChatOpenAI(model=model, base_url=f"{gateway}/v1", api_key=KEY, max_retries=0)
    chain = llm.bind(**legacy) | JsonOutputFunctionsParser()
    assert chain.invoke("Weather in London?") == {"city": "London"}


def test_model_without_tools_is_refused_before_upstream(gateway, fake):
    rv = raw(gateway, model=PLAIN, messages=[{"role": "user", "content": "hi"}], tools=[WEATHER])
    assert rv.status_code == 400
    validate_error(rv.json())
    error = rv.json()["error"]
    assert (error["param"], error["code"]) == ("tools", "model_not_supported")
    assert PLAIN in error["message"] and not runs(fake)


def test_unreadable_schema_serves_text_and_refuses_features(gateway, fake):
    fake.add_fault("http500", times=None, model=HERMES, route="schema")
    try:
        rv = raw(gateway, model=HERMES, messages=[{"role": "user", "content": "hi"}])
        assert rv.status_code == 200 and rv.json()["choices"][0]["message"]["content"] == \
            "Echo: hi"
        rv = raw(gateway, model=HERMES, messages=[{"role": "user", "content": "hi"}],
                 tools=[WEATHER])
        assert rv.status_code == 400 and "could not read" in rv.json()["error"]["message"]
    finally:
        fake.reset()


# -- structured output -----------------------------------------------------------------------

@pytest.mark.parametrize("model", [CLASSIC, SHAPED, GUIDED, HYBRID])
def test_parse_with_a_pydantic_model(client, fake, model):
    completion = client.chat.completions.parse(
        model=model, messages=[{"role": "user", "content": "Who is Ann?"}],
        response_format=Person)
    assert completion.choices[0].message.parsed == Person(name="name-1", age=42)
    sent = runs(fake)[-1].json
    if model == GUIDED:
        assert sent["guided_json"]["properties"]["age"]["type"] == "integer"
    elif model == SHAPED:
        assert sent["response_format"]["json_schema"]["name"] == "Person"
    else:
        assert sent["response_format"]["json_schema"]["title"] == "Person"


def test_json_mode_streams_where_the_model_cannot(gateway, fake):
    events = read_events(raw(gateway, model=CLASSIC, stream=True,
                             messages=[{"role": "user", "content": "json please"}],
                             response_format={"type": "json_object"}))
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1]
                   if e["choices"])
    assert json.loads(text) == {"echo": "json please"}
    assert "stream" not in runs(fake)[-1].json
    for event in events[:-1]:
        validate_chat_chunk(event)


def test_json_mode_not_met_is_json_validate_failed(gateway):
    rv = raw(gateway, model=CLASSIC, messages=[{"role": "user", "content": "x [[json_fail]]"}],
             response_format={"type": "json_object"})
    assert rv.status_code == 400
    assert (rv.json()["error"]["code"], rv.json()["error"]["param"]) == (
        "json_validate_failed", "response_format")


def test_model_without_json_mode_is_refused(gateway, fake):
    rv = raw(gateway, model=PLAIN, messages=[{"role": "user", "content": "x"}],
             response_format={"type": "json_object"})
    assert rv.status_code == 400 and rv.json()["error"]["param"] == "response_format"
    assert not runs(fake)


# -- stop ------------------------------------------------------------------------------------

def test_emulated_stop_split_across_events_never_reaches_the_client(gateway, fake):
    events = read_events(raw(gateway, model=PLAIN, stream=True, stop=["t3 t4", "zz"],
                             messages=[{"role": "user",
                                        "content": "[[tokens=400]] [[delay=0.02]]"}]))
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1]
                   if e["choices"])
    assert text == "t0 t1 t2 "
    assert [e["choices"][0]["finish_reason"] for e in events[:-1] if e["choices"]][-1] == "stop"
    assert "stop" not in runs(fake)[-1].json
    # Closed at once, not read to its end (that would take 8 s and count as completed).
    assert fake.wait_for(lambda f: f.streams_aborted == 1)
    assert fake.streams_completed == 0


def test_emulated_stop_non_stream_and_native_stop(client, fake):
    completion = client.chat.completions.create(
        model=PLAIN, stop="three", messages=[{"role": "user", "content": "one two three four"}])
    assert completion.choices[0].message.content == "Echo: one two "
    assert completion.choices[0].finish_reason == "stop"
    client.chat.completions.create(model=SHAPED, stop=["four"],
                                   messages=[{"role": "user", "content": "one four"}])
    assert runs(fake)[-1].json["stop"] == ["four"]


# -- images ----------------------------------------------------------------------------------

def image_message(*urls, text="What is this?"):
    return [{"role": "user", "content": [{"type": "text", "text": text}] + [
        {"type": "image_url", "image_url": {"url": url}} for url in urls]}]


@pytest.mark.parametrize("model", [GEMMA, GUIDED, VISION])
def test_image_by_data_url(client, fake, model):
    completion = client.chat.completions.create(model=model, messages=image_message(DATA_URL))
    assert completion.choices[0].message.content == "Echo: What is this? [images: 1]"
    sent = runs(fake)[-1].json
    if model == VISION:
        assert sent["image"] == DATA_URL and sent["messages"][0]["content"] == "What is this?"
    else:
        assert sent["messages"][0]["content"][1]["image_url"]["url"] == DATA_URL


@pytest.mark.parametrize("model, urls, param", [
    pytest.param(VISION, [DATA_URL, DATA_URL], "messages[0].content[2]", id="second-image"),
    pytest.param(PLAIN, [DATA_URL], "messages[0].content[1]", id="model-without-vision"),
    pytest.param(GEMMA, ["https://example.com/cat.png"], "messages[0].content[1]",
                 id="fetching-off"),
    pytest.param(GEMMA, ["data:image/png;base64,!!!x"], "messages[0].content[1]",
                 id="malformed-data-url"),
    pytest.param(VISION, ["data:image/png,%89PNG"], "messages[0].content[1]",
                 id="data-url-not-base64"),
])
def test_image_refusals_name_the_part(gateway, fake, model, urls, param):
    rv = raw(gateway, model=model, messages=image_message(*urls))
    assert rv.status_code == 400, rv.text
    validate_error(rv.json())
    assert rv.json()["error"]["param"] == param and not runs(fake)


# -- reasoning, n, logprobs -------------------------------------------------------------------

def test_reasoning_content_passed_on(client, gateway):
    completion = client.chat.completions.create(
        model=SHAPED, reasoning_effort="low", messages=[{"role": "user", "content": "why?"}])
    assert completion.choices[0].message.model_extra["reasoning_content"] == \
        "Thinking about: why?"
    events = read_events(raw(gateway, model=SHAPED, stream=True,
                             messages=[{"role": "user", "content": "why? [[think]]"}]))
    reasoning = "".join(e["choices"][0]["delta"].get("reasoning_content") or ""
                        for e in events[:-1] if e["choices"])
    assert reasoning == "Thinking about: why?"
    for event in events[:-1]:
        validate_chat_chunk(event)
    plain = client.chat.completions.create(model=SHAPED,
                                           messages=[{"role": "user", "content": "hi"}])
    assert "reasoning_content" not in (plain.choices[0].message.model_extra or {})


@pytest.mark.parametrize("body, param", [
    pytest.param({"model": CLASSIC, "reasoning_effort": "low"}, "reasoning_effort",
                 id="effort-without-schema"),
    pytest.param({"model": SHAPED, "reasoning_effort": "extreme"}, "reasoning_effort",
                 id="effort-unknown-value"),
    pytest.param({"model": CLASSIC, "n": 2}, "n", id="n-classic"),
    pytest.param({"model": CLASSIC, "logprobs": True}, "logprobs", id="logprobs-classic"),
])
def test_refused_where_the_schema_lacks_it(gateway, fake, body, param):
    rv = raw(gateway, messages=[{"role": "user", "content": "x"}], **body)
    assert rv.status_code == 400 and rv.json()["error"]["param"] == param
    assert not runs(fake)


def test_n_and_logprobs_where_the_schema_has_them(client, gateway):
    completion = client.chat.completions.create(
        model=SHAPED, n=2, logprobs=True, messages=[{"role": "user", "content": "a b"}])
    assert [c.index for c in completion.choices] == [0, 1]
    assert completion.choices[1].logprobs.content[0].token == "Echo:"
    validate_chat_completion(raw(gateway, model=SHAPED, n=2,
                                 messages=[{"role": "user", "content": "a"}]).json())
    validate_chat_completion(raw(gateway, model=SHAPED, logprobs=True,
                                 messages=[{"role": "user", "content": "a"}]).json())


def test_logprobs_reach_a_replayed_stream(gateway):
    events = read_events(raw(gateway, model=SHAPED, logprobs=True, stream=True,
                             messages=[{"role": "user", "content": "a b"}]))
    for event in events[:-1]:
        validate_chat_chunk(event)
    tokens = [t["token"] for e in events[:-1] for c in e["choices"]
              for t in (c["logprobs"] or {}).get("content") or []]
    assert tokens == ["Echo:", "a", "b"]


# -- LangChain -------------------------------------------------------------------------------

def test_langchain_bind_tools_and_structured_output(gateway):
    from langchain_openai import ChatOpenAI

    def get_weather(city: str) -> str:
        """Weather in a city."""
        return "sunny"

    for model in (CLASSIC, SHAPED):
        llm = ChatOpenAI(model=model, base_url=f"{gateway}/v1", api_key=KEY, max_retries=0)
        message = llm.bind_tools([get_weather]).invoke("Weather in London?")
        assert message.tool_calls[0]["name"] == "get_weather"
        assert message.tool_calls[0]["args"] == {"city": "London"}
        person = llm.with_structured_output(Person).invoke("Who is Ann?")
        assert person == Person(name="name-1", age=42)


# -- image fetching --------------------------------------------------------------------------

class _Images(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        routes = {"/cat.png": (200, "image/png", PNG),
                  "/big.png": (200, "image/png", PNG * 400),
                  "/page.html": (200, "text/html", b"<html></html>")}
        if self.path.startswith("/redirect"):
            target = {"/redirect-metadata": "http://169.254.169.254/latest/meta-data",
                      "/redirect-loopback": f"http://127.0.0.1:{self.server.server_port}/cat.png"}
            self.send_response(302)
            self.send_header("Location", target[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, kind, body = routes.get(self.path, (404, "text/plain", b"no"))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def images():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


@pytest.fixture(scope="module")
def fetching(fake, images, tmp_path_factory):
    """A gateway that fetches images, from `localhost` only, at most 4 KiB."""
    log = tmp_path_factory.mktemp("fetching") / "gateway.log"
    settings = _settings(fake, IMAGE_FETCH="1", IMAGE_FETCH_ALLOW_HOSTS="localhost",
                         IMAGE_FETCH_MAX_BYTES="4096", IMAGE_FETCH_TIMEOUT="5")
    with run_gateway(settings, log, workers=1) as (base_url, _):
        yield base_url


@pytest.fixture(scope="module")
def fetching_anywhere(fake, tmp_path_factory):
    """A gateway that fetches images from any public address (no allow-list)."""
    log = tmp_path_factory.mktemp("anywhere") / "gateway.log"
    with run_gateway(_settings(fake, IMAGE_FETCH="1", IMAGE_FETCH_TIMEOUT="3"), log,
                     workers=1) as (base_url, _):
        yield base_url


def test_image_fetched_from_an_allowed_host(fetching, images, fake):
    rv = raw(fetching, model=GEMMA, messages=image_message(f"http://localhost:{images}/cat.png"))
    assert rv.status_code == 200, rv.text
    assert rv.json()["choices"][0]["message"]["content"].endswith("[images: 1]")
    assert runs(fake)[-1].json["messages"][0]["content"][1]["image_url"]["url"] == DATA_URL


@pytest.mark.parametrize("url", [
    pytest.param("http://127.0.0.1:{port}/cat.png", id="host-not-allowed"),
    pytest.param("http://localhost:{port}/redirect-metadata", id="redirect-to-metadata"),
    pytest.param("http://localhost:{port}/redirect-loopback", id="redirect-to-other-host"),
    pytest.param("file:///etc/passwd", id="file-scheme"),
    pytest.param("http://localhost:{port}/big.png", id="oversized"),
    pytest.param("http://localhost:{port}/page.html", id="not-an-image"),
    pytest.param("http://localhost:{port}/missing.png", id="not-found"),
])
def test_image_fetch_refusals(fetching, images, fake, url):
    rv = raw(fetching, model=GEMMA, messages=image_message(url.format(port=images)))
    assert rv.status_code == 400, rv.text
    validate_error(rv.json())
    assert rv.json()["error"]["param"] == "messages[0].content[1]"
    assert not runs(fake)


@pytest.mark.parametrize("url", [
    pytest.param("http://127.0.0.1:{port}/cat.png", id="loopback"),
    pytest.param("http://169.254.169.254/latest/meta-data", id="metadata-address"),
    pytest.param("http://10.0.0.1/cat.png", id="private"),
    pytest.param("http://[::1]:{port}/cat.png", id="ipv6-loopback"),
])
def test_private_addresses_are_never_fetched(fetching_anywhere, images, fake, url):
    rv = raw(fetching_anywhere, model=GEMMA, messages=image_message(url.format(port=images)))
    assert rv.status_code == 400, rv.text
    assert "private or reserved" in rv.json()["error"]["message"]
    assert not runs(fake)
