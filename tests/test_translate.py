"""Translation between OpenAI and Workers AI (gateway/openai/translate.py): pure dicts in, dicts out."""
import pytest

from gateway.openai.translate import (Reply, UnreadableReply, chat_completion, chat_payload,
                               completion_payload, input_chars, read_reply, text_completion)
from schemas import chat_request, completion_request
from tests.conftest import MODEL, cf_ok, load_data
from tests.openai_spec import validate_chat_completion, validate_completion

USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


# ---------------------------------------------------------------- read_reply


@pytest.mark.parametrize("body, text", [
    pytest.param(cf_ok({"response": "hello"}), "hello", id="response"),
    pytest.param(cf_ok({"response": ""}), "", id="response-empty"),
    pytest.param(cf_ok({"choices": [{"index": 0, "message": {
        "role": "assistant", "content": "hello"}, "finish_reason": "stop"}]}), "hello",
        id="choices-message"),
    pytest.param(cf_ok({"response_text": "hello"}), "hello", id="response_text"),
    pytest.param(cf_ok({"response": 42}), "42", id="response-integer"),
    pytest.param(cf_ok({"response": 1.5}), "1.5", id="response-float"),
    pytest.param(cf_ok({"choices": [{"message": {"role": "assistant", "content": 7}}]}), "7",
                 id="choices-integer"),
    pytest.param(cf_ok({"response_text": 0}), "0", id="response_text-zero"),
    pytest.param(load_data("cf_chat_classic_ok.json"), "hello world", id="canned-classic"),
    pytest.param(load_data("cf_chat_response_text_ok.json"), "hello world",
                 id="canned-response_text"),
    pytest.param(load_data("cf_chat_openai_ok.json"),
                 "أهلاً بك يا صديقي! أنت رائع جداً اليوم.", id="canned-openai"),
    pytest.param(load_data("cf_chat_openai_unwrapped.json"),
                 "أهلاً بك يا صديقي! أنت رائع جداً اليوم.", id="canned-openai-unwrapped"),
])
def test_read_reply_reads_text(body, text):
    assert read_reply(body).text == text


@pytest.mark.parametrize("body", [
    pytest.param(None, id="null"),
    pytest.param([], id="list"),
    pytest.param("hello", id="string"),
    pytest.param(cf_ok(None), id="result-null"),
    pytest.param(cf_ok(["hello"]), id="result-list"),
    pytest.param(cf_ok("hello"), id="result-string"),
    pytest.param(cf_ok({}), id="result-empty"),
    pytest.param(cf_ok({"usage": USAGE}), id="usage-only"),
    pytest.param(cf_ok({"output": "hello"}), id="unknown-key"),
    pytest.param(cf_ok({"response": True}), id="response-boolean"),
    pytest.param(cf_ok({"choices": []}), id="choices-empty"),
    pytest.param(cf_ok({"choices": "hello"}), id="choices-string"),
    pytest.param(cf_ok({"choices": ["hello"]}), id="choices-of-string"),
    pytest.param(cf_ok({"choices": [{"message": {"content": False}}]}),
                 id="choices-content-boolean"),
])
def test_read_reply_refuses_unreadable_body(body):
    with pytest.raises(UnreadableReply):
        read_reply(body)


@pytest.mark.parametrize("body", [
    pytest.param(cf_ok({"response": True}), id="response"),
    pytest.param(cf_ok({"response_text": False}), id="response_text"),
    pytest.param(cf_ok({"choices": [{"message": {"role": "assistant", "content": True}}]}),
                 id="choices"),
])
def test_read_reply_refuses_boolean_content(body):
    """Only numbers become text; a boolean is not a number."""
    with pytest.raises(UnreadableReply):
        read_reply(body)


@pytest.mark.parametrize("body, usage", [
    pytest.param(load_data("cf_chat_classic_ok.json"), USAGE, id="classic"),
    pytest.param(load_data("cf_chat_classic_minimal.json"), USAGE, id="no-total"),
    pytest.param(load_data("cf_chat_openai_ok.json"),
                 {"prompt_tokens": 147, "completion_tokens": 16, "total_tokens": 163},
                 id="openai-with-neurons"),
    pytest.param(cf_ok({"response": "x"}), None, id="none"),
    pytest.param(cf_ok({"response": "x", "usage": None}), None, id="null"),
])
def test_read_reply_takes_usage_from_cloudflare(body, usage):
    assert read_reply(body).usage == usage


# ---------------------------------------------------------------- response bodies


@pytest.mark.parametrize("completion_tokens, max_tokens, reason", [
    pytest.param(4, 5, "stop", id="below"),
    pytest.param(5, 5, "length", id="equal"),
    pytest.param(6, 5, "length", id="above"),
    pytest.param(0, 1, "stop", id="empty"),
])
@pytest.mark.parametrize("build", [chat_completion, text_completion])
def test_finish_reason_is_length_iff_max_tokens_reached(build, completion_tokens, max_tokens,
                                                        reason):
    usage = {"prompt_tokens": 3, "completion_tokens": completion_tokens,
             "total_tokens": 3 + completion_tokens}
    body = build(Reply("x", usage), model=MODEL, max_tokens=max_tokens)
    assert body["choices"][0]["finish_reason"] == reason


@pytest.mark.parametrize("usage", [pytest.param(USAGE, id="usage"),
                                   pytest.param(None, id="no-usage")])
def test_chat_completion_is_valid_openai_body(usage):
    body = chat_completion(Reply("Hello there", usage), model=MODEL, max_tokens=256)
    validate_chat_completion(body)
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == MODEL
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello there",
                                             "refusal": None}
    assert body["choices"][0]["finish_reason"] == "stop"


def test_logprobs_of_an_openai_shaped_answer_are_a_valid_openai_body():
    # vLLM-style logprobs carry only `content`; OpenAI's schema requires `refusal` beside it
    logprobs = {"content": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105],
                             "top_logprobs": []}]}
    reply = read_reply(cf_ok({"choices": [{"index": 0, "message": {
        "role": "assistant", "content": "Hi"}, "logprobs": logprobs, "finish_reason": "stop"}]}))
    body = chat_completion(reply, model=MODEL, max_tokens=256)
    validate_chat_completion(body)
    assert body["choices"][0]["logprobs"] == {**logprobs, "refusal": None}


@pytest.mark.parametrize("usage", [pytest.param(USAGE, id="usage"),
                                   pytest.param(None, id="no-usage")])
def test_text_completion_is_valid_openai_body(usage):
    body = text_completion(Reply("Hello there", usage), model=MODEL, max_tokens=256)
    validate_completion(body)
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["choices"][0]["text"] == "Hello there"
    assert body["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("build", [chat_completion, text_completion])
def test_usage_drops_cloudflare_extras(build):
    reply = read_reply(load_data("cf_chat_openai_ok.json"))
    body = build(reply, model=MODEL, max_tokens=256)
    assert body["usage"] == {"prompt_tokens": 147, "completion_tokens": 16, "total_tokens": 163}


@pytest.mark.parametrize("build", [chat_completion, text_completion])
def test_usage_absent_when_cloudflare_sent_none(build):
    body = build(read_reply(cf_ok({"response": "hi"})), model=MODEL, max_tokens=256)
    assert "usage" not in body


def test_each_completion_gets_a_new_id():
    reply = Reply("x", None)
    first = chat_completion(reply, model=MODEL, max_tokens=1)
    second = chat_completion(reply, model=MODEL, max_tokens=1)
    assert first["id"] != second["id"]


# ---------------------------------------------------------------- payloads


def test_chat_payload_of_minimal_request():
    request = chat_request.load({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})
    assert chat_payload(request, 256) == {
        "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 256, "temperature": 0.6}


def test_chat_payload_sends_developer_as_system():
    request = chat_request.load({"model": MODEL, "messages": [
        {"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}]})
    assert chat_payload(request, 256)["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


@pytest.mark.parametrize("fields, max_tokens", [
    pytest.param({}, 100, id="default"),
    pytest.param({"max_tokens": 7}, 7, id="max_tokens"),
    pytest.param({"max_completion_tokens": 9}, 9, id="max_completion_tokens"),
])
def test_payload_max_tokens(fields, max_tokens):
    request = completion_request.load({"model": MODEL, "prompt": "Hi", **fields})
    payload = completion_payload(request, 100)
    assert payload["max_tokens"] == max_tokens
    assert "max_completion_tokens" not in payload


def test_completion_payload_forwards_sampling_parameters():
    request = completion_request.load({"model": MODEL, "prompt": "Hi", "temperature": 0,
                                       "top_p": 0.5, "top_k": 3, "seed": 9, "user": "u"})
    assert completion_payload(request, 256) == {
        "prompt": "Hi", "max_tokens": 256, "temperature": 0.0, "top_p": 0.5, "top_k": 3,
        "seed": 9}


def test_stream_flag_forwarded_only_when_streaming():
    request = chat_request.load({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})
    assert "stream" not in chat_payload(request, 256)
    assert chat_payload({**request, "stream": True}, 256)["stream"] is True


@pytest.mark.parametrize("request_, chars", [
    pytest.param({"prompt": "héllo"}, 5, id="prompt"),
    pytest.param({"messages": [{"role": "system", "content": "ab"},
                               {"role": "user", "content": "cde"}]}, 5, id="messages"),
])
def test_input_chars_counts_characters(request_, chars):
    assert input_chars(request_) == chars
