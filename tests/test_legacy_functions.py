"""Legacy `functions` answers (gateway/openai/legacy_functions.py): the first tool call
also as `function_call`, finish_reason `function_call`, in bodies and stream chunks."""
from gateway.openai.legacy_functions import LegacyFunctionStream, legacy_completion
from gateway.openai.stream_translate import StreamTranslator
from gateway.openai.translate import Reply, chat_completion
from tests.openai_spec import validate_chat_chunk, validate_chat_completion

MODEL = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
CALLS = [{"id": "call_1", "type": "function",
          "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
         {"id": "call_2", "type": "function",
          "function": {"name": "get_time", "arguments": "{}"}}]


def test_completion_gets_the_first_call_as_function_call():
    body = legacy_completion(chat_completion(Reply("", None, tool_calls=CALLS), model=MODEL,
                                             max_tokens=256))
    validate_chat_completion(body)
    choice = body["choices"][0]
    assert choice["message"]["function_call"] == CALLS[0]["function"]
    assert choice["message"]["tool_calls"] == CALLS
    assert choice["finish_reason"] == "function_call"


def test_text_answer_is_unchanged():
    body = chat_completion(Reply("Hello", None), model=MODEL, max_tokens=256)
    assert legacy_completion(dict(body)) == body


def _stream(payloads):
    translator = LegacyFunctionStream(StreamTranslator("chat", model=MODEL, max_tokens=256,
                                                       include_usage=True))
    chunks = translator.start()
    for payload in payloads:
        chunks += translator.feed(payload)
    return chunks + translator.finish()


def test_stream_carries_function_call_deltas():
    chunks = _stream([
        b'{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1",'
        b'"type":"function","function":{"name":"get_weather","arguments":""}}]}}]}',
        b'{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,'
        b'"function":{"arguments":"{\\"city\\":"}}]}}]}',
        b'{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,'
        b'"function":{"arguments":"\\"Paris\\"}"}}]}}]}',
        b"[DONE]"])
    for chunk in chunks:
        validate_chat_chunk(chunk)
    deltas = [c["delta"]["function_call"] for chunk in chunks for c in chunk["choices"]
              if "function_call" in c["delta"]]
    assert deltas[0] == {"name": "get_weather", "arguments": ""}
    assert "".join(d["arguments"] for d in deltas) == '{"city":"Paris"}'
    finishes = [c["finish_reason"] for chunk in chunks for c in chunk["choices"]
                if c["finish_reason"]]
    assert finishes == ["function_call"]


def test_replayed_stream_carries_function_call():
    translator = LegacyFunctionStream(StreamTranslator("chat", model=MODEL, max_tokens=256,
                                                       include_usage=False))
    chunks = translator.replay(Reply("", None, tool_calls=CALLS))
    calls = [c["delta"]["function_call"] for chunk in chunks for c in chunk["choices"]
             if "function_call" in c["delta"]]
    assert calls == [CALLS[0]["function"]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "function_call"
