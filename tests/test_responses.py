"""Responses API <-> chat translation (gateway/openai/responses.py, responses_answer.py)."""
import pytest

from gateway.errors import InvalidRequestError
from gateway.openai import responses
from gateway.openai.responses_answer import from_chat, shell
from schemas import responses_request
from tests.openai_spec import validate

MODEL = "@cf/meta/llama-3.1-8b-instruct"


def request(**fields):
    """A validated Responses request."""
    return responses_request.load({"model": MODEL, "input": "hi", **fields})


def chat_of(history=(), **fields):
    return responses.chat_request(request(**fields), list(history))


def test_string_input_is_one_user_message_and_instructions_come_first():
    items, chat, sources = chat_of(instructions="Be brief.", max_output_tokens=9, temperature=1.5,
                                   top_p=0.5, user="u-1", metadata={"a": "b"}, store=False)
    assert chat == {"model": MODEL, "stream": False, "max_completion_tokens": 9,
                    "temperature": 1.5, "top_p": 0.5, "user": "u-1",
                    "messages": [{"role": "developer", "content": "Be brief."},
                                 {"role": "user", "content": "hi"}]}
    assert sources == ["instructions", "input"]
    assert items[0]["type"] == "message" and items[0]["id"].startswith("msg_")
    assert items[0]["content"] == [{"type": "input_text", "text": "hi"}]
    validate({"object": "list", "data": items, "first_id": "x", "last_id": "x",
              "has_more": False}, "ResponseItemList")


def test_items_become_chat_history_with_tool_calls_joined_to_their_turn():
    given = [
        {"role": "system", "content": [{"type": "input_text", "text": "sys"}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "look "},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
        {"role": "assistant", "content": "Let me check."},
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{}"},
        {"type": "function_call", "call_id": "call_2", "name": "time", "arguments": "{\"z\":1}"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "noon"}]},
    ]
    items, chat, sources = chat_of(input=given, stream=True)
    assert chat["stream_options"] == {"include_usage": True}
    assert chat["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [
            {"type": "text", "text": "look "},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA",
                                                "detail": "auto"}}]},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "weather", "arguments": "{}"}},
            {"id": "call_2", "type": "function",
             "function": {"name": "time", "arguments": "{\"z\":1}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "name": "weather", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "name": "time", "content": "noon"},
    ]
    assert sources == ["input[0]", "input[1]", "input[2]", "input[6]", "input[7]"]
    assert [item["type"] for item in items] == [
        "message", "message", "message", "function_call", "function_call", "reasoning",
        "function_call_output", "function_call_output"]
    assert items[5]["id"] == "rs_1" and items[2]["content"][0]["type"] == "output_text"
    validate({"object": "list", "data": items, "first_id": "x", "last_id": "x",
              "has_more": False}, "ResponseItemList")


def test_a_function_call_without_an_assistant_turn_opens_one():
    _, chat, _ = chat_of(input=[
        {"role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}])
    assert chat["messages"][1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}


def test_history_comes_before_the_new_input():
    history = responses.input_items(request(input="first")) + [
        {"id": "msg_x", "type": "message", "role": "assistant", "status": "completed",
         "content": [responses.output_text("Echo: first")]}]
    items, chat, sources = chat_of(history, input="second")
    assert [m["content"] for m in chat["messages"]] == ["first", "Echo: first", "second"]
    assert sources == ["previous_response_id", "previous_response_id", "input"]
    assert items[:2] == history


def test_tools_formats_and_effort_take_the_chat_shapes():
    tool = {"type": "function", "name": "get_weather", "description": "Weather.",
            "parameters": {"type": "object", "properties": {}}, "strict": True}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    _, chat, _ = chat_of(tools=[tool], tool_choice={"type": "function", "name": "get_weather"},
                         parallel_tool_calls=False, reasoning={"effort": "low"},
                         text={"format": {"type": "json_schema", "name": "out",
                                          "schema": schema, "strict": True}})
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather.",
        "parameters": {"type": "object", "properties": {}}, "strict": True}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["parallel_tool_calls"] is False and chat["reasoning_effort"] == "low"
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "out", "schema": schema, "strict": True}}
    assert chat_of(text={"format": {"type": "json_object"}})[1]["response_format"] == {
        "type": "json_object"}
    assert "response_format" not in chat_of(text={"format": {"type": "text"}})[1]
    assert "tool_choice" not in chat_of(tool_choice="auto")[1]  # no tools: nothing to choose


@pytest.mark.parametrize("chat_param, expected", [
    ("messages[1].content", "input[3]"),
    ("messages[0]", "instructions"),
    ("messages[9].role", "input"),
    ("messages", "input"),
    ("max_completion_tokens", "max_output_tokens"),
    ("response_format.json_schema.schema", "text.format.json_schema.schema"),
    ("reasoning_effort", "reasoning.effort"),
    ("tools[0].function.parameters", "tools[0].parameters"),
    ("temperature", "temperature"),
    (None, None),
], ids=lambda value: str(value))
def test_chat_params_are_named_as_the_client_sent_them(chat_param, expected):
    assert responses.responses_param(chat_param, ["instructions", "input[3]"]) == expected


def test_chat_error_renames_param_and_message():
    error = InvalidRequestError("Invalid value for 'max_completion_tokens': Must be >= 1.",
                                param="max_completion_tokens")
    renamed = responses.chat_error(error, [])
    assert renamed.param == "max_output_tokens"
    assert renamed.message == "Invalid value for 'max_output_tokens': Must be >= 1."


def completion(message, finish_reason="stop", usage=True):
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", **message},
                         "finish_reason": finish_reason, "logprobs": None}]}
    if usage:
        body["usage"] = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    return body


def answer(message, finish_reason="stop", usage=True, **fields):
    body = request(**fields)
    head = shell(body, {"temperature": 0.6}, "resp_1", 1700000000)
    response = from_chat(completion(message, finish_reason, usage), head)
    validate(response, "Response")
    return response


def test_text_answer_is_a_completed_message_with_usage_and_echoed_settings():
    response = answer({"content": "Hello!"}, instructions="x", metadata={"k": "v"}, user="u",
                      tools=[{"type": "function", "name": "f"}])
    assert response["status"] == "completed" and response["completed_at"] >= 1700000000
    assert response["output"][0]["content"] == [responses.output_text("Hello!")]
    assert response["usage"] == {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7,
                                 "input_tokens_details": {"cached_tokens": 0,
                                                          "cache_write_tokens": 0},
                                 "output_tokens_details": {"reasoning_tokens": 0}}
    assert response["instructions"] == "x" and response["metadata"] == {"k": "v"}
    assert response["user"] == "u" and response["model"] == MODEL
    assert response["tools"] == [{"type": "function", "name": "f", "description": None,
                                  "parameters": None, "strict": None}]
    assert "output_text" not in response  # the SDKs compute it


def test_length_makes_the_response_incomplete():
    response = answer({"content": "t0 t1"}, "length")
    assert response["status"] == "incomplete" and response["completed_at"] is None
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"


def test_tool_calls_and_reasoning_become_their_own_items():
    calls = [{"id": "call_a", "type": "function",
              "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
             {"id": "call_b", "type": "function", "function": {"name": "time", "arguments": ""}}]
    response = answer({"content": None, "reasoning_content": "Think.", "tool_calls": calls},
                      "tool_calls", usage=False)
    kinds = [item["type"] for item in response["output"]]
    assert kinds == ["reasoning", "function_call", "function_call"]
    assert response["output"][0]["content"] == [{"type": "reasoning_text", "text": "Think."}]
    first = response["output"][1]
    assert (first["call_id"], first["name"], first["arguments"]) == (
        "call_a", "weather", "{\"city\":\"Paris\"}")
    assert response["output"][1]["id"] != response["output"][2]["id"]
    assert "usage" not in response  # none reported, none invented


def test_empty_answer_still_holds_a_message():
    response = answer({"content": ""})
    assert response["output"][0]["content"] == [responses.output_text("")]
