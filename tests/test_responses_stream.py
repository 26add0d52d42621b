"""Chat chunks to Responses stream events (gateway/openai/responses_stream.py), on the relay."""
import json

import pytest

from gateway.errors import RateLimitError, UpstreamError
from gateway.openai.responses_answer import shell
from gateway.openai.responses_stream import ResponsesStream
from gateway.openai.stream_translate import StreamTranslator
from gateway.openai.streaming import relay
from gateway.openai.translate import Reply
from schemas import responses_request
from tests.openai_spec import validate
from tests.test_streaming import CLASSIC, OPENAI_SHAPED, FakeResponse

MODEL = "@cf/meta/llama-3.1-8b-instruct"


def stream(max_tokens=256, on_end=None, **fields):
    body = responses_request.load({"model": MODEL, "input": "hi", "stream": True, **fields})
    chat = StreamTranslator("chat", model=MODEL, max_tokens=max_tokens, include_usage=True)
    return ResponsesStream(chat, shell(body, {"temperature": 0.6}, "resp_1", 1700000000), on_end)


def parse(raw):
    """The events of a Responses SSE body, checking each block's `event:` line and schema."""
    assert not raw.endswith(b"data: [DONE]\n\n")
    events = []
    for block in raw.decode().split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        event = json.loads(lines[1][len("data: "):])
        assert event["type"] == lines[0][len("event: "):]
        events.append(event)
    return checked(events)


def checked(events):
    """Every event valid against OpenAI's schema, numbered 0, 1, 2, ..."""
    for event in events:
        validate(event, "ResponseStreamEvent")
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    return events


def kinds(events):
    return [event["type"] for event in events]


TEXT_SEQUENCE = ["response.created", "response.in_progress", "response.output_item.added",
                 "response.content_part.added"]
TEXT_END = ["response.output_text.done", "response.content_part.done",
            "response.output_item.done", "response.completed"]


@pytest.mark.parametrize("body, text", [(CLASSIC, "Héllo wörld 😀42"), (OPENAI_SHAPED, "أهلاً7")],
                         ids=["classic", "openai-shaped"])
def test_relayed_text_stream_is_the_full_event_sequence(body, text):
    ended = []
    translator = stream(on_end=ended.append)
    response = FakeResponse([body[:37], body[37:]])
    events = parse(b"".join(relay(response, translator)))
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert kinds(events) == TEXT_SEQUENCE + ["response.output_text.delta"] * len(deltas) + TEXT_END
    assert "".join(e["delta"] for e in deltas) == text
    final = events[-1]["response"]
    validate(final, "Response")
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == text
    assert final["usage"]["output_tokens"] in (2, 3) and ended == [final]
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["output"] == []


def test_length_ends_with_response_incomplete():
    body = (b'data: {"response":"a"}\n\ndata: {"response":" b"}\n\n'
            b'data: {"response":"","usage":{"prompt_tokens":1,"completion_tokens":2,'
            b'"total_tokens":3}}\n\ndata: [DONE]\n\n')
    events = parse(b"".join(relay(FakeResponse([body]), stream(max_tokens=2))))
    assert events[-1]["type"] == "response.incomplete"
    final = events[-1]["response"]
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete"


def test_failure_mid_stream_is_response_failed_with_the_output_so_far():
    body = b'data: {"response":"par"}\n\ndata: {"error":{"message":"busy","code":3040},"success":false}\n\n'
    ended = []
    events = parse(b"".join(relay(FakeResponse([body]), stream(on_end=ended.append))))
    assert kinds(events)[-2:] == ["response.output_text.delta", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "rate_limit_exceeded"
    assert failed["output"][0]["status"] == "incomplete"
    assert failed["output"][0]["content"][0]["text"] == "par"
    assert ended == []  # nothing stored for a failed stream


def test_broken_connection_is_a_server_error():
    translator = stream()
    events = parse(b"".join(relay(FakeResponse([b'data: {"response":"x"}\n\n'],
                                               error=ConnectionResetError()), translator)))
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_error"


def chunk(delta=None, finish_reason=None):
    return {"choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}]}


def call(index, fragment, call_id=None, name=None):
    function = {"arguments": fragment}
    if name:
        function["name"] = name
    return chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                  "function": function}]})


def test_reasoning_text_and_tool_calls_each_stream_as_their_own_item():
    translator = stream()
    events = translator.start() + translator._convert([
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "Think"}), chunk({"reasoning_content": "ing."}),
        chunk({"content": "Checking."}),
        call(0, '{"ci', "call_a", "weather"), call(0, 'ty":"Paris"}'),
        call(1, "{}", "call_b", "time"),
        chunk(finish_reason="tool_calls")]) + translator._end()
    checked(events)
    assert kinds(events) == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.reasoning_text.delta", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"]
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.added"] == \
        [0, 1, 2, 3]
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [(e["name"], e["arguments"]) for e in done] == [("weather", '{"city":"Paris"}'),
                                                           ("time", "{}")]
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == [
        "reasoning", "message", "function_call", "function_call"]
    assert final["output"][2]["call_id"] == "call_a"
    assert events[2]["item"]["content"] == []  # the added item as it was then


def test_replayed_reply_and_an_empty_answer_are_whole_sequences():
    translator = stream()
    events = checked(translator.replay(Reply("whole", {"prompt_tokens": 1, "completion_tokens": 1,
                                                       "total_tokens": 2})))
    assert kinds(events) == TEXT_SEQUENCE + ["response.output_text.delta"] + TEXT_END
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "whole"
    empty = stream()
    events = checked(empty.start() + empty._end())
    assert kinds(events) == TEXT_SEQUENCE + TEXT_END
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""


def test_rate_limit_and_other_failures_have_openai_codes():
    for error, code in ((RateLimitError("slow down"), "rate_limit_exceeded"),
                        (UpstreamError("broken"), "server_error")):
        event = stream().fail(error)[0]
        validate(event, "ResponseStreamEvent")
        assert event["response"]["error"] == {"code": code, "message": error.message}
