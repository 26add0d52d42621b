"""The lean Schema loads exactly what marshmallow's own `_deserialize` loads, errors included."""
import pytest
from marshmallow import Schema as MarshmallowSchema, ValidationError

from schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ResponsesRequest


def plain(schema_class):
    """The same schema with marshmallow's own walk over every field."""
    return type(f"Plain{schema_class.__name__}", (schema_class,),
                {"_deserialize": MarshmallowSchema._deserialize})()


def outcome(schema, body):
    try:
        return "ok", schema.load(body)
    except ValidationError as exc:
        return "error", exc.messages


M = "@cf/meta/llama-3.1-8b-instruct"
USER = [{"role": "user", "content": "hi"}]
CASES = [
    pytest.param(ChatCompletionRequest, {"model": M, "messages": USER}, id="chat-minimal"),
    pytest.param(ChatCompletionRequest, {"model": M, "messages": USER, "temperature": 0.2,
                                         "max_tokens": 5, "stream": True,
                                         "stream_options": {"include_usage": True}},
                 id="chat-stream"),
    pytest.param(ChatCompletionRequest, {"model": M, "messages": USER, "unknown": 1, "user": None},
                 id="chat-unknown-and-null"),
    pytest.param(ChatCompletionRequest, {"messages": USER}, id="chat-no-model"),
    pytest.param(ChatCompletionRequest, {"model": M}, id="chat-no-messages"),
    pytest.param(ChatCompletionRequest, {"model": M, "messages": USER, "temperature": "hot"},
                 id="chat-bad-temperature"),
    pytest.param(ChatCompletionRequest, {"model": M, "messages": USER, "top_p": 9, "n": True},
                 id="chat-two-bad-fields"),
    pytest.param(ChatCompletionRequest, {"model": M, "messages": [{"role": "wizard"}]},
                 id="chat-bad-message"),
    pytest.param(ChatCompletionRequest, {"model": M, "messages": USER, "stop": ["a", "b"],
                                         "tools": [{"type": "function",
                                                    "function": {"name": "f"}}],
                                         "tool_choice": "auto", "seed": 3},
                 id="chat-tools"),
    pytest.param(ChatCompletionRequest, {"model": M, "messages": USER,
                                         "response_format": {"type": "json_object"}},
                 id="chat-json-mode"),
    pytest.param(CompletionRequest, {"model": M, "prompt": "Once", "max_tokens": 3},
                 id="completion"),
    pytest.param(CompletionRequest, {"model": M, "prompt": 3}, id="completion-bad-prompt"),
    pytest.param(EmbeddingRequest, {"model": M, "input": ["a", "b"]}, id="embeddings"),
    pytest.param(ResponsesRequest, {"model": M, "input": "hi", "instructions": "be brief"},
                 id="responses"),
    pytest.param(ResponsesRequest, {"model": M, "input": 5, "store": "no"},
                 id="responses-bad"),
]


@pytest.mark.parametrize("schema_class, body", CASES)
def test_lean_load_equals_marshmallows(schema_class, body):
    assert outcome(schema_class(), dict(body)) == outcome(plain(schema_class), dict(body))


def test_full_field_table_is_back_after_a_load():
    schema = ChatCompletionRequest()
    every = dict(schema.load_fields)
    schema.load({"model": M, "messages": USER})
    with pytest.raises(ValidationError):
        schema.load({"model": M})
    assert schema.load_fields == every
