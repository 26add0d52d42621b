"""Tool translation, both ways (gateway/openai/tools.py, gateway/openai/stream_tools.py)."""
import json

import pytest

from gateway.cloudflare.capabilities import derive
from gateway.openai import tools
from gateway.openai.stream_tools import ToolCallMerger
from tests import fake_model_families as families

CLASSIC = derive(families.classic_tools())
GUIDED = derive(families.classic_guided())
OPENAI = derive(families.openai())
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"],
                                             "description": "Unit."}},
        "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "Now."}}


def test_classic_tools_get_required_descriptions_filled():
    sent, choice = tools.upstream_tools([WEATHER, TIME], "auto", CLASSIC)
    assert choice is None
    assert sent[0] == {"type": "function", "function": {
        "name": "get_weather", "description": "", "parameters": {
            "type": "object", "required": ["city"], "properties": {
                "city": {"type": "string", "description": ""},
                "unit": {"type": "string", "enum": ["c", "f"], "description": "Unit."}}}}}
    assert sent[1]["function"]["parameters"] == {"type": "object", "properties": {}}


def test_openai_shaped_tools_and_tool_choice_pass_through():
    sent, choice = tools.upstream_tools([WEATHER], {"name": "get_weather"}, OPENAI)
    assert sent == [WEATHER]
    assert choice == {"type": "function", "function": {"name": "get_weather"}}
    assert tools.upstream_tools([WEATHER], "required", OPENAI)[1] == "required"


@pytest.mark.parametrize("choice, names", [
    pytest.param("auto", ["get_weather", "get_time"], id="auto"),
    pytest.param("required", ["get_weather", "get_time"], id="required-advisory"),
    pytest.param({"name": "get_time"}, ["get_time"], id="named-only-that-tool"),
    pytest.param("none", [], id="none-sends-nothing"),
])
def test_tool_choice_without_native_support(choice, names):
    sent, forward = tools.upstream_tools([WEATHER, TIME], choice, CLASSIC)
    assert forward is None
    assert [t["function"]["name"] for t in sent] == names


def test_flat_form_when_the_schema_only_has_it():
    flat = derive({"input": {"type": "object", "properties": {
        "messages": {"type": "array"}, "tools": {"type": "array", "items": families.FUNCTION}}}})
    assert flat.tool_form == "flat"
    sent, _ = tools.upstream_tools([TIME], "auto", flat)
    assert sent == [{"name": "get_time", "description": "Now.",
                     "parameters": {"type": "object", "properties": {}}}]


def test_history_keeps_calls_ids_and_names():
    assistant = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    assert tools.history_message(assistant, OPENAI)["content"] is None
    assert tools.history_message(assistant, CLASSIC)["content"] == ""
    result = {"role": "tool", "content": "42", "tool_call_id": "call_1", "name": "f"}
    assert tools.history_message(result, CLASSIC) == result


def test_tool_call_ids_fit_the_schema_pattern_and_still_pair():
    short = tools.call_id_for("c1", GUIDED)
    assert len(short) == 9 and short.isalnum() and short == tools.call_id_for("c1", GUIDED)
    assert tools.call_id_for("call_abcdef123456", GUIDED) == "call_abcdef123456"
    assert tools.call_id_for("c1", OPENAI) == "c1"


@pytest.mark.parametrize("raw, expected", [
    pytest.param([{"name": "f", "arguments": {"a": 1}}], [("f", {"a": 1})], id="classic-object"),
    pytest.param([{"id": "x", "type": "function", "function": {"name": "f", "arguments": {}}}],
                 [("f", {})], id="scout-object"),
    pytest.param([{"id": "x", "type": "function", "function": {"name": "f",
                                                               "arguments": "{\"a\":2}"}}],
                 [("f", {"a": 2})], id="openai-string"),
    pytest.param([{"name": "f"}, {"name": None, "arguments": None}], [("f", {})],
                 id="blank-entry-dropped"),
    pytest.param("nonsense", [], id="not-a-list"),
])
def test_read_calls(raw, expected):
    calls = tools.read_calls(raw)
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] \
        == expected
    assert all(c["type"] == "function" and c["id"] for c in calls)


def test_read_calls_keeps_ids_and_makes_unique_ones():
    calls = tools.read_calls([{"id": "a", "name": "f"}, {"id": "a", "name": "g"},
                              {"name": "h"}, {"name": "h"}])
    ids = [c["id"] for c in calls]
    assert ids[0] == "a" and len(set(ids)) == 4 and all(i.startswith("call_") for i in ids[1:])


def test_string_arguments_are_passed_on_as_they_are():
    assert tools.read_calls([{"name": "f", "arguments": "{ \"a\" : 1 }"}])[0]["function"][
        "arguments"] == "{ \"a\" : 1 }"


@pytest.mark.parametrize("text, forced, expected", [
    pytest.param('{"name": "get_time", "arguments": {}}', None, "get_time", id="name-args"),
    pytest.param('```json\n{"name": "get_weather", "parameters": {"city": "x"}}\n```', None,
                 "get_weather", id="fenced-parameters"),
    pytest.param('{"city": "Paris"}', "get_weather", "get_weather", id="bare-arguments"),
    pytest.param('{"city": "Paris"}', None, None, id="bare-arguments-unforced"),
    pytest.param("It is sunny.", "get_weather", None, id="prose"),
    pytest.param('{"name": "unknown", "arguments": {}}', None, None, id="unknown-tool"),
])
def test_salvage_forced_call_written_as_text(text, forced, expected):
    calls = tools.salvage(text, ("get_weather", "get_time"), forced)
    assert (calls[0]["function"]["name"] if calls else None) == expected


def _merge(pieces):
    merger = ToolCallMerger()
    out = [delta for piece in pieces for delta in merger.feed(piece)]
    calls = {}
    for delta in out:
        call = calls.setdefault(delta["index"], {"id": delta.get("id"), "name": None,
                                                 "arguments": ""})
        call["name"] = call["name"] or delta.get("function", {}).get("name")
        call["arguments"] += delta["function"].get("arguments") or ""
    return out, calls


def test_stream_merges_byte_split_openai_deltas():
    arguments = '{"city": "Paris"}'
    pieces = [[{"index": 0, "id": "call_x", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}]]
    pieces += [[{"index": 0, "function": {"arguments": ch}}] for ch in arguments]
    pieces += [[{"index": 0, "id": None, "function": {"name": None, "arguments": None}}]]
    out, calls = _merge(pieces)
    assert out[0]["id"] == "call_x" and out[0]["function"]["name"] == "get_weather"
    assert all("id" not in d and "name" not in d["function"] for d in out[1:])
    assert calls == {0: {"id": "call_x", "name": "get_weather", "arguments": arguments}}


def test_stream_waits_for_the_name_before_the_first_delta():
    out, calls = _merge([[{"index": 0, "function": {"arguments": "{\"a\""}}],
                         [{"index": 0, "function": {"name": "f", "arguments": ":1}"}}]])
    assert len(out) == 1 and out[0]["function"] == {"name": "f", "arguments": '{"a":1}'}
    assert out[0]["id"].startswith("call_")


def test_stream_classic_whole_calls_without_index():
    out, calls = _merge([[{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {}}]])
    assert [d["index"] for d in out] == [0, 1]
    assert calls[0]["arguments"] == '{"a":1}' and calls[1]["name"] == "g"


NAMED = CLASSIC  # classic_tools: its message items take a `name`
CALL = {"role": "assistant", "content": "", "tool_calls": [
    {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}


@pytest.mark.parametrize("capabilities, result, name", [
    pytest.param(NAMED, {"role": "tool", "content": "9:00", "tool_call_id": "call_1"},
                 "get_time", id="filled-from-the-call"),
    pytest.param(NAMED, {"role": "tool", "content": "9:00", "tool_call_id": "call_1",
                         "name": "own"}, "own", id="clients-own-name-kept"),
    pytest.param(NAMED, {"role": "tool", "content": "9:00", "tool_call_id": "call_9"},
                 None, id="no-matching-call"),
    pytest.param(GUIDED, {"role": "tool", "content": "9:00", "tool_call_id": "call_1"},
                 None, id="schema-without-name"),
])
def test_tool_result_gets_its_functions_name_where_the_schema_takes_one(capabilities, result,
                                                                         name):
    """OpenAI's tool results carry only the call id; a model whose message items take a
    `name` gets the called function's name, a model whose schema lacks it never does."""
    from gateway.openai.features import _history
    sent = _history([{"role": "user", "content": "time?"}, CALL, result], capabilities)[-1]
    assert sent.get("name") == name
    assert sent["content"] == "9:00" and sent["role"] == "tool"


def test_message_name_comes_from_the_schema():
    assert NAMED.message_name and OPENAI.message_name
    assert not GUIDED.message_name and not derive(families.classic()).message_name
