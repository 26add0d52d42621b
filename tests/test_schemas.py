"""Request validation (schemas.py): what is refused before anything goes upstream, and what is forwarded."""
import json

import pytest
import responses

from tests.conftest import KEY, MODEL, RUN_URL, SEARCH_URL, TOKEN, TestConfig, cf_ok
from tests.openai_spec import validate_chat_completion, validate_completion, validate_error

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
GEMMA = "@cf/google/gemma-4-26b-a4b-it"
USAGE = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
HELLO = [{"role": "user", "content": "Hello"}]


def chat(**fields):
    """A valid chat body, with `fields` added or replaced."""
    return {"model": MODEL, "messages": HELLO, **fields}


def completion(**fields):
    """A valid text-completion body, with `fields` added or replaced."""
    return {"model": MODEL, "prompt": "Once upon a time", **fields}


def without(body, key):
    return {k: v for k, v in body.items() if k != key}


@pytest.fixture
def run(upstream):
    """Cloudflare answering every run of MODEL with a short reply."""
    upstream.add(responses.POST, RUN_URL + MODEL, json=cf_ok({"response": "hi", "usage": USAGE}))
    return upstream


def forwarded(upstream):
    """The JSON body of the one run that went to Cloudflare (schema look-ups aside)."""
    calls = [c for c in upstream.calls if "/ai/run/" in c.request.url]
    assert len(calls) == 1
    return json.loads(calls[0].request.body)


def assert_refused(rv, upstream, param, status=400, code=None):
    """An OpenAI error naming `param`, and nothing sent to Cloudflare."""
    assert rv.status_code == status, rv.get_data(as_text=True)
    assert rv.mimetype == "application/json"
    body = rv.get_json()
    validate_error(body)
    assert body["error"]["param"] == param
    if code is not None:
        assert body["error"]["code"] == code
    assert not [c for c in upstream.calls if "/ai/run/" in c.request.url]


# ---------------------------------------------------------------- refused bodies


SAMPLING_REFUSED = [
    pytest.param("model", None, id="model-null"),
    pytest.param("model", 123, id="model-number"),
    pytest.param("model", ["x"], id="model-list"),
    pytest.param("stream", "true", id="stream-string"),
    pytest.param("stream", 1, id="stream-number"),
    pytest.param("max_tokens", 0, id="max_tokens-zero"),
    pytest.param("max_tokens", -5, id="max_tokens-negative"),
    pytest.param("max_tokens", True, id="max_tokens-boolean"),
    pytest.param("max_tokens", "10", id="max_tokens-string"),
    pytest.param("max_tokens", 10.5, id="max_tokens-fraction"),
    pytest.param("max_completion_tokens", 0, id="max_completion_tokens-zero"),
    pytest.param("max_completion_tokens", True, id="max_completion_tokens-boolean"),
    pytest.param("max_completion_tokens", "64", id="max_completion_tokens-string"),
    pytest.param("temperature", -0.1, id="temperature-below"),
    pytest.param("temperature", 5.01, id="temperature-above"),
    pytest.param("temperature", "0.5", id="temperature-string"),
    pytest.param("temperature", True, id="temperature-boolean"),
    pytest.param("top_p", -0.1, id="top_p-below"),
    pytest.param("top_p", 2.1, id="top_p-above"),
    pytest.param("top_p", "1", id="top_p-string"),
    pytest.param("top_k", 0, id="top_k-zero"),
    pytest.param("top_k", 51, id="top_k-above"),
    pytest.param("top_k", 1.5, id="top_k-fraction"),
    pytest.param("top_k", True, id="top_k-boolean"),
    pytest.param("frequency_penalty", -0.1, id="frequency_penalty-below"),
    pytest.param("frequency_penalty", 2.1, id="frequency_penalty-above"),
    pytest.param("presence_penalty", 2.5, id="presence_penalty-above"),
    pytest.param("presence_penalty", "1", id="presence_penalty-string"),
    pytest.param("repetition_penalty", -1, id="repetition_penalty-below"),
    pytest.param("repetition_penalty", False, id="repetition_penalty-boolean"),
    pytest.param("seed", 0, id="seed-zero"),
    pytest.param("seed", 10_000_000_000, id="seed-above"),
    pytest.param("seed", 1.5, id="seed-fraction"),
    pytest.param("seed", "42", id="seed-string"),
]


@pytest.mark.parametrize("field, value", SAMPLING_REFUSED)
def test_chat_refuses_bad_parameter(client, auth, upstream, field, value):
    rv = client.post(CHAT, json=chat(**{field: value}), headers=auth)
    assert_refused(rv, upstream, field)


@pytest.mark.parametrize("field, value", SAMPLING_REFUSED)
def test_completion_refuses_bad_parameter(client, auth, upstream, field, value):
    rv = client.post(COMPLETIONS, json=completion(**{field: value}), headers=auth)
    assert_refused(rv, upstream, field)


@pytest.mark.parametrize("body, param", [
    pytest.param(without(chat(), "model"), "model", id="model-missing"),
    pytest.param(without(chat(), "messages"), "messages", id="messages-missing"),
    pytest.param(chat(messages=None), "messages", id="messages-null"),
    pytest.param(chat(messages=[]), "messages", id="messages-empty"),
    pytest.param(chat(messages="Hello"), "messages", id="messages-string"),
    pytest.param(chat(messages={"role": "user", "content": "Hello"}), "messages",
                 id="messages-object"),
    pytest.param(chat(messages=["Hello"]), "messages[0]", id="message-string"),
    pytest.param(chat(messages=[{"content": "Hello"}]), "messages[0].role", id="role-missing"),
    pytest.param(chat(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role",
                 id="role-unknown"),
    pytest.param(chat(messages=[{"role": 1, "content": "x"}]), "messages[0].role",
                 id="role-number"),
    pytest.param(chat(messages=[*HELLO, {"role": "robot", "content": "x"}]), "messages[1].role",
                 id="second-role-unknown"),
    pytest.param(chat(messages=[{"role": "user"}]), "messages[0].content", id="content-missing"),
    pytest.param(chat(messages=[{"role": "user", "content": None}]), "messages[0].content",
                 id="content-null"),
    pytest.param(chat(messages=[{"role": "user", "content": 42}]), "messages[0].content",
                 id="content-number"),
    pytest.param(chat(messages=[{"role": "user", "content": {"type": "text", "text": "x"}}]),
                 "messages[0].content", id="content-object"),
    pytest.param(chat(messages=[{"role": "user", "content": [
        {"type": "text", "text": "Look:"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]),
        "messages[0].content[1]", id="content-part-image-model-without-vision"),
    pytest.param(chat(messages=[{"role": "user", "content": [{"text": "x"}]}]),
                 "messages[0].content[0].type", id="content-part-untyped"),
    pytest.param(chat(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
                 "messages[0].content[0].text", id="content-part-text-number"),
    pytest.param(chat(messages=[*HELLO, {"role": "tool", "content": "42"}]),
                 "messages[1].tool_call_id", id="tool-message-without-tool-call-id"),
    pytest.param(chat(messages=[*HELLO, {"role": "tool", "content": "42", "tool_call_id": ""}]),
                 "messages[1].tool_call_id", id="tool-message-empty-tool-call-id"),
    pytest.param(chat(messages=[*HELLO, {"role": "tool", "content": "42", "tool_call_id": 7}]),
                 "messages[1].tool_call_id", id="tool-message-tool-call-id-number"),
])
def test_chat_refuses_bad_messages(client, auth, upstream, body, param):
    rv = client.post(CHAT, json=body, headers=auth)
    assert_refused(rv, upstream, param)


@pytest.mark.parametrize("body", [
    pytest.param(without(completion(), "prompt"), id="missing"),
    pytest.param(completion(prompt=None), id="null"),
    pytest.param(completion(prompt=5), id="number"),
    pytest.param(completion(prompt=[]), id="empty-list"),
    pytest.param(completion(prompt=["one", "two"]), id="two-strings"),
    pytest.param(completion(prompt=[5]), id="list-of-number"),
    pytest.param(completion(prompt=[[1, 2, 3]]), id="token-ids"),
    pytest.param(completion(prompt={"text": "x"}), id="object"),
])
def test_completion_refuses_bad_prompt(client, auth, upstream, body):
    rv = client.post(COMPLETIONS, json=body, headers=auth)
    assert_refused(rv, upstream, "prompt")


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
@pytest.mark.parametrize("data", [
    pytest.param(b'{"model": ', id="truncated"),
    pytest.param(b"{'model': 'x'}", id="single-quotes"),
    pytest.param(b"", id="empty"),
    pytest.param(b"[]", id="array"),
    pytest.param(b'"hello"', id="string"),
    pytest.param(b"42", id="number"),
    pytest.param(b"null", id="null"),
    pytest.param(b'{"model": NaN}', id="nan"),
    # orjson reads 1,024 levels but writes only 255: deeper bodies could not go upstream
    pytest.param(b'{"model": "@cf/meta/llama-3.1-8b-instruct", "metadata": {"a": '
                 + b"[" * 300 + b"]" * 300 + b"}}", id="nested-too-deep"),
])
def test_refuses_malformed_or_non_object_body(client, auth, upstream, path, data):
    rv = client.post(path, data=data, headers={**auth, "Content-Type": "application/json"})
    assert_refused(rv, upstream, None)


MODEL_CANNOT = [
    pytest.param("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}],
                 "tools", id="tools"),
    pytest.param("functions", [{"name": "f", "parameters": {}}], "functions", id="functions"),
    pytest.param("response_format", {"type": "json_object"}, "response_format",
                 id="response_format-json_object"),
    pytest.param("response_format", {"type": "json_schema", "json_schema": {"name": "x"}},
                 "response_format", id="response_format-json_schema"),
    pytest.param("n", 2, "n", id="n-two"),
    pytest.param("logprobs", True, "logprobs", id="logprobs-true"),
    pytest.param("reasoning_effort", "low", "reasoning_effort", id="reasoning_effort"),
]


@pytest.fixture
def plain_model_schema(upstream):
    """Cloudflare's schema for MODEL: plain text only (no tools, JSON mode, images...)."""
    from tests.fake_model_families import classic
    upstream.add(responses.GET, SEARCH_URL.replace("/search", "/schema"), json=cf_ok(classic()))
    return upstream


@pytest.mark.parametrize("field, value, param", MODEL_CANNOT)
def test_chat_refuses_what_the_model_schema_lacks(client, auth, plain_model_schema, field,
                                                  value, param):
    rv = client.post(CHAT, json=chat(**{field: value}), headers=auth)
    assert_refused(rv, plain_model_schema, param, code="model_not_supported")
    assert MODEL in rv.get_json()["error"]["message"]


@pytest.mark.parametrize("field, value", [
    pytest.param("tool_choice", "required", id="tool_choice-required-without-tools"),
    pytest.param("tool_choice", {"type": "function", "function": {"name": "f"}},
                 id="tool_choice-object-without-tools"),
    pytest.param("tool_choice", "sometimes", id="tool_choice-unknown"),
    pytest.param("stop", ["a", "b", "c", "d", "e"], id="stop-five"),
    pytest.param("stop", "", id="stop-empty-string"),
    pytest.param("stop", ["a", ""], id="stop-empty-in-list"),
    pytest.param("stop", ["a", 1], id="stop-non-string"),
    pytest.param("stop", 5, id="stop-number"),
    pytest.param("top_logprobs", 2, id="top_logprobs-without-logprobs"),
    pytest.param("n", 0, id="n-zero"),
    pytest.param("response_format", {"type": "xml"}, id="response_format-unknown"),
    pytest.param("response_format", {"type": "json_schema"}, id="response_format-no-schema"),
    pytest.param("tools", [{"type": "function", "function": {"name": "bad name"}}],
                 id="tools-bad-name"),
    pytest.param("tools", [{"type": "retrieval"}], id="tools-not-function"),
])
def test_chat_refuses_malformed_feature(client, auth, upstream, field, value):
    rv = client.post(CHAT, json=chat(**{field: value}), headers=auth)
    assert rv.status_code == 400
    assert rv.get_json()["error"]["param"].split(".")[0].split("[")[0] == field
    assert not upstream.calls


@pytest.mark.parametrize("field, value", [
    pytest.param("n", 3, id="n"),
    pytest.param("response_format", {"type": "json_object"}, id="response_format"),
    pytest.param("tools", [{"type": "function", "function": {"name": "f"}}], id="tools"),
])
def test_completion_refuses_unimplemented_parameter(client, auth, upstream, field, value):
    rv = client.post(COMPLETIONS, json=completion(**{field: value}), headers=auth)
    assert_refused(rv, upstream, field)


def test_chat_forwards_tool_history(client, auth, run, plain_model_schema):
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    result = {"role": "tool", "content": "42", "tool_call_id": "call_1"}
    rv = client.post(CHAT, json=chat(messages=[*HELLO, message, result]), headers=auth)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    run_calls = [c for c in run.calls if "/ai/run/" in c.request.url]
    assert json.loads(run_calls[0].request.body)["messages"][1:] == [
        {"role": "assistant", "content": "", "tool_calls": message["tool_calls"]}, result]


@pytest.mark.parametrize("path, body", [
    pytest.param(CHAT, chat(model="@cf/meta/llama-9-nonexistent"), id="chat"),
    pytest.param(COMPLETIONS, completion(model="gpt-4o"), id="completion"),
    pytest.param(CHAT, chat(model=MODEL.upper()), id="chat-case-differs"),
])
def test_refuses_model_outside_allow_list(client, auth, upstream, path, body):
    rv = client.post(path, json=body, headers=auth)
    assert_refused(rv, upstream, "model", status=404, code="model_not_found")


# ---------------------------------------------------------------- input length


class SmallInputConfig(TestConfig):
    MAX_INPUT_CHARS = 10


@pytest.fixture
def small_client():
    from gateway import create_app

    return create_app(SmallInputConfig).test_client()


@pytest.mark.parametrize("path, body", [
    pytest.param(CHAT, chat(messages=[{"role": "user", "content": "x" * 131073}]), id="chat"),
    pytest.param(COMPLETIONS, completion(prompt="x" * 131073), id="completion"),
])
def test_refuses_input_over_default_limit(client, auth, upstream, path, body):
    rv = client.post(path, json=body, headers=auth)
    assert rv.status_code == 400
    validate_error(rv.get_json())
    assert rv.get_json()["error"]["code"] == "context_length_exceeded"
    assert len(upstream.calls) == 0


@pytest.mark.parametrize("path, body", [
    pytest.param(CHAT, chat(messages=[{"role": "user", "content": "x" * 131072}]), id="chat"),
    pytest.param(COMPLETIONS, completion(prompt="x" * 131072), id="completion"),
])
def test_accepts_input_at_default_limit(client, auth, run, path, body):
    rv = client.post(path, json=body, headers=auth)
    assert rv.status_code == 200, rv.get_data(as_text=True)


@pytest.mark.parametrize("path, body", [
    pytest.param(CHAT, chat(messages=[{"role": "system", "content": "12345"},
                                      {"role": "user", "content": "678901"}]),
                 id="messages-together"),
    pytest.param(CHAT, chat(messages=[{"role": "user", "content": [
        {"type": "text", "text": "123456"}, {"type": "text", "text": "78901"}]}]),
        id="content-parts-together"),
    pytest.param(COMPLETIONS, completion(prompt="12345678901"), id="prompt"),
    pytest.param(COMPLETIONS, completion(prompt=["12345678901"]), id="prompt-list"),
])
def test_refuses_input_over_configured_limit(small_client, auth, upstream, path, body):
    rv = small_client.post(path, json=body, headers=auth)
    assert rv.status_code == 400
    validate_error(rv.get_json())
    assert rv.get_json()["error"]["code"] == "context_length_exceeded"
    assert len(upstream.calls) == 0


@pytest.mark.parametrize("path, body", [
    pytest.param(CHAT, chat(messages=[{"role": "system", "content": "12345"},
                                      {"role": "user", "content": "67890"}]),
                 id="messages-together"),
    pytest.param(CHAT, chat(messages=[{"role": "user", "content": "é😀" * 5}]),
                 id="characters-not-bytes"),
    pytest.param(COMPLETIONS, completion(prompt="1234567890"), id="prompt"),
])
def test_accepts_input_at_configured_limit(small_client, auth, run, path, body):
    rv = small_client.post(path, json=body, headers=auth)
    assert rv.status_code == 200, rv.get_data(as_text=True)


# ---------------------------------------------------------------- accepted bodies


@pytest.mark.parametrize("field, value", [
    pytest.param("tools", [], id="tools-empty"),
    pytest.param("n", 1, id="n-one"),
    pytest.param("stop", None, id="stop-null"),
    pytest.param("response_format", {"type": "text"}, id="response_format-text"),
    pytest.param("logprobs", False, id="logprobs-false"),
    pytest.param("user", "user-1234", id="user"),
    pytest.param("metadata", {"project": "demo"}, id="metadata"),
    pytest.param("store", False, id="store"),
    pytest.param("unknown_key", {"anything": 1}, id="unknown-key"),
])
def test_chat_accepts_and_drops_do_nothing_parameter(client, auth, run, field, value):
    rv = client.post(CHAT, json=chat(**{field: value}), headers=auth)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    assert forwarded(run) == {"messages": HELLO, "max_tokens": 256, "temperature": 0.6}


@pytest.mark.parametrize("field, value", [
    pytest.param("max_tokens", 1, id="max_tokens-min"),
    pytest.param("temperature", 0, id="temperature-min"),
    pytest.param("temperature", 5, id="temperature-max"),
    pytest.param("top_p", 0, id="top_p-min"),
    pytest.param("top_p", 2, id="top_p-max"),
    pytest.param("top_k", 1, id="top_k-min"),
    pytest.param("top_k", 50, id="top_k-max"),
    pytest.param("frequency_penalty", 2, id="frequency_penalty-max"),
    pytest.param("presence_penalty", 0, id="presence_penalty-min"),
    pytest.param("repetition_penalty", 1.1, id="repetition_penalty"),
    pytest.param("seed", 1, id="seed-min"),
    pytest.param("seed", 9_999_999_999, id="seed-max"),
])
def test_chat_accepts_boundary_value(client, auth, run, field, value):
    rv = client.post(CHAT, json=chat(**{field: value}), headers=auth)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    assert forwarded(run)[field] == value


def test_chat_treats_null_as_absent(client, auth, run):
    body = chat(stream=None, max_tokens=None, max_completion_tokens=None, temperature=None,
                top_p=None, top_k=None, seed=None, stop=None, tools=None, n=None, user=None)
    rv = client.post(CHAT, json=body, headers=auth)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    assert rv.mimetype == "application/json"
    assert forwarded(run) == {"messages": HELLO, "max_tokens": 256, "temperature": 0.6}


def test_chat_accepts_json_with_charset(client, auth, run):
    rv = client.post(CHAT, data=json.dumps(chat()).encode(),
                     headers={**auth, "Content-Type": "application/json; charset=utf-8"})
    assert rv.status_code == 200, rv.get_data(as_text=True)
    validate_chat_completion(rv.get_json())


def test_chat_forwards_exactly_the_known_parameters(client, auth, run):
    body = chat(max_tokens=100, temperature=1.5, top_p=0.9, top_k=40, seed=1234,
                frequency_penalty=0.5, presence_penalty=0.25, repetition_penalty=1.2,
                stream=False, user="u", metadata={"a": "b"}, store=True, extra="dropped")
    rv = client.post(CHAT, json=body, headers=auth)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    assert forwarded(run) == {
        "messages": HELLO, "max_tokens": 100, "temperature": 1.5, "top_p": 0.9, "top_k": 40,
        "seed": 1234, "frequency_penalty": 0.5, "presence_penalty": 0.25,
        "repetition_penalty": 1.2,
    }


def test_chat_sends_developer_as_system_and_joins_content_parts(client, auth, run,
                                                                plain_model_schema):
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hello, "},
                                     {"type": "text", "text": "world"}], "name": "ann"},
        {"role": "assistant", "content": "Hi."},
        {"role": "assistant", "content": None, "tool_calls": [CALL_1]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    ]
    rv = client.post(CHAT, json=chat(messages=messages), headers=auth)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    assert forwarded(run)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello, world"},
        {"role": "assistant", "content": "Hi."},
        {"role": "assistant", "content": "", "tool_calls": [CALL_1]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    ]


CALL_1 = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.mark.parametrize("messages, position", [
    pytest.param([{"role": "user", "content": "hi"},
                  {"role": "tool", "content": "42", "tool_call_id": "call_1"}], 1,
                 id="no-call-at-all"),
    pytest.param([{"role": "user", "content": "hi"},
                  {"role": "assistant", "content": None, "tool_calls": [CALL_1]},
                  {"role": "tool", "content": "42", "tool_call_id": "call_2"}], 2,
                 id="other-call-id"),
    pytest.param([{"role": "user", "content": "hi"},
                  {"role": "tool", "content": "42", "tool_call_id": "call_1"},
                  {"role": "assistant", "content": None, "tool_calls": [CALL_1]}], 1,
                 id="result-before-its-call"),
])
def test_tool_message_must_answer_an_earlier_call(client, auth, upstream, messages, position):
    """As OpenAI: a tool result for a call no earlier assistant message made is a 400 naming
    the message, and nothing goes upstream."""
    rv = client.post(CHAT, json=chat(messages=messages), headers=auth)
    assert_refused(rv, upstream, f"messages[{position}].tool_call_id")


@pytest.mark.parametrize("fields, max_tokens", [
    pytest.param({}, 256, id="default"),
    pytest.param({"max_tokens": 64}, 64, id="max_tokens"),
    pytest.param({"max_completion_tokens": 32}, 32, id="max_completion_tokens"),
])
def test_chat_forwards_max_tokens(client, auth, run, fields, max_tokens):
    rv = client.post(CHAT, json=chat(**fields), headers=auth)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    payload = forwarded(run)
    assert payload["max_tokens"] == max_tokens
    assert "max_completion_tokens" not in payload


def test_chat_sends_gateway_token_not_client_key(client, auth, run):
    rv = client.post(CHAT, json=chat(), headers={**auth, "X-Custom": "x"})
    assert rv.status_code == 200
    request = run.calls[0].request
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert KEY not in str(request.headers)
    assert KEY not in request.body.decode()
    assert "X-Custom" not in request.headers


def test_chat_accepts_second_allowed_model(client, auth, upstream):
    upstream.add(responses.POST, RUN_URL + GEMMA, json=cf_ok({"response": "hi", "usage": USAGE}))
    rv = client.post(CHAT, json=chat(model=GEMMA), headers=auth)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    assert rv.get_json()["model"] == GEMMA
    assert upstream.calls[0].request.url == RUN_URL + GEMMA


@pytest.mark.parametrize("prompt", [
    pytest.param("Once upon a time", id="string"),
    pytest.param(["Once upon a time"], id="list-of-one"),
])
def test_completion_forwards_prompt(client, auth, run, prompt):
    rv = client.post(COMPLETIONS, json=completion(prompt=prompt, user="u", n=1, foo=1),
                     headers=auth)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    validate_completion(rv.get_json())
    assert forwarded(run) == {"prompt": "Once upon a time", "max_tokens": 256, "temperature": 0.6}


# ---------------------------------------------------------------- MAX_MESSAGES


@pytest.mark.parametrize("messages", [
    pytest.param([{"role": "user", "content": ""}] * 2049, id="2049-messages"),
    pytest.param([{"role": "user", "content": "x"}] * 31000, id="31000-messages"),
    pytest.param([{"role": "user", "content": [{"type": "text", "text": "a"}] * 4097}],
                 id="4097-content-parts"),
    pytest.param([{"role": "user", "content": [{"type": "text", "text": "a"}] * 3}] * 1500,
                 id="4500-parts-over-messages"),
])
def test_too_many_messages_are_refused_before_validation(client, auth, upstream, monkeypatch,
                                                         messages):
    """MAX_MESSAGES (2,048, OpenAI's limit) and MAX_CONTENT_PARTS cap a request before
    marshmallow runs: validating tens of thousands of messages blocks the worker."""
    import schemas

    def never(*args, **kwargs):
        raise AssertionError("marshmallow ran on an oversized request")

    monkeypatch.setattr(schemas.chat_request, "load", never)
    rv = client.post(CHAT, json=chat(messages=messages), headers=auth)
    assert_refused(rv, upstream, "messages", code="array_above_max_length")


TOOL = {"type": "function", "function": {"name": "f", "parameters": {}}}


@pytest.mark.parametrize("field, listed", [
    pytest.param("tools", [TOOL] * 129, id="129-tools"),
    pytest.param("tools", [TOOL] * 14000, id="14000-tools"),
    pytest.param("functions", [TOOL["function"]] * 129, id="129-functions"),
])
def test_too_many_tools_are_refused_before_validation(client, auth, upstream, monkeypatch,
                                                      field, listed):
    """OpenAI's own limit of 128 tools caps a request before marshmallow runs: a megabyte of
    tools took a third of a second to validate, blocking every stream of the worker."""
    import schemas

    def never(*args, **kwargs):
        raise AssertionError("marshmallow ran on an oversized request")

    monkeypatch.setattr(schemas.chat_request, "load", never)
    rv = client.post(CHAT, json=chat(**{field: listed}), headers=auth)
    assert_refused(rv, upstream, field, code="array_above_max_length")


def test_max_messages_allows_openais_limit(client, auth, run):
    rv = client.post(CHAT, json=chat(messages=[{"role": "user", "content": "x"}] * 2048),
                     headers=auth)
    assert rv.status_code == 200, rv.get_data(as_text=True)


@pytest.mark.parametrize("name", [
    pytest.param(MODEL + "\n", id="trailing-newline"),
    pytest.param(MODEL + "\r\n", id="trailing-crlf"),
    pytest.param("@cf/x/ok\n", id="review-example"),
    pytest.param(MODEL + "\nfake log line", id="newline-inside"),
])
def test_model_name_is_a_full_match(client, auth, upstream, name):
    """`$` also matches before a trailing newline: the name check matches the whole string."""
    rv = client.post(CHAT, json=chat(model=name), headers=auth)
    assert_refused(rv, upstream, "model")
