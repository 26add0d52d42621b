"""Self-tests for tests/openai_spec.py (the OpenAI OpenAPI validation helper)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tests import openai_spec
from tests.openai_spec import (
    validate,
    validate_chat_chunk,
    validate_chat_completion,
    validate_completion,
    validate_completion_chunk,
    validate_error,
    validate_model,
    validate_models_list,
)

CREATED = 1_700_000_000

CHAT_COMPLETION = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": CREATED,
    "model": "gpt-4o-mini",
    "system_fingerprint": "fp_123",
    "service_tier": "default",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 5,
        "completion_tokens": 2,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}

CHAT_COMPLETION_TOOL_CALL = {
    "id": "chatcmpl-124",
    "object": "chat.completion",
    "created": CREATED,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
}


def _chunk(choices, **extra):
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "gpt-4o-mini",
        "choices": choices,
        **extra,
    }


CHUNK_FIRST = _chunk(
    [{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None},
      "logprobs": None, "finish_reason": None}],
    system_fingerprint="fp_123",
)
CHUNK_CONTENT = _chunk([{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}])
CHUNK_CONTENT_USAGE_NULL = _chunk(
    [{"index": 0, "delta": {"content": "lo"}, "logprobs": None, "finish_reason": None}], usage=None
)
CHUNK_TOOL_CALL = _chunk(
    [{"index": 0, "finish_reason": None, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": ""}}]}}]
)
CHUNK_FINAL = _chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
CHUNK_USAGE_ONLY = _chunk(
    [], usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
)

COMPLETION = {
    "id": "cmpl-123",
    "object": "text_completion",
    "created": CREATED,
    "model": "gpt-3.5-turbo-instruct",
    "choices": [{"text": "\n\nThis is a test", "index": 0, "logprobs": None, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
}
COMPLETION_LOGPROBS = copy.deepcopy(COMPLETION)
COMPLETION_LOGPROBS["choices"][0]["logprobs"] = {
    "tokens": ["\n", "This"],
    "token_logprobs": [-0.1, -0.2],
    "top_logprobs": [{"\n": -0.1}, {"This": -0.2}],
    "text_offset": [0, 1],
}

COMPLETION_CHUNK_MID = {
    "id": "cmpl-123",
    "object": "text_completion",
    "created": CREATED,
    "model": "gpt-3.5-turbo-instruct",
    "choices": [{"text": "This", "index": 0, "logprobs": None, "finish_reason": None}],
}
COMPLETION_CHUNK_FINAL = copy.deepcopy(COMPLETION_CHUNK_MID)
COMPLETION_CHUNK_FINAL["choices"][0].update(text="", finish_reason="stop")

ERROR = {"error": {"message": "x", "type": "invalid_request_error", "param": None, "code": None}}
ERROR_STRINGS = {"error": {"message": "x", "type": "invalid_request_error", "param": "model",
                           "code": "model_not_found"}}

MODEL = {"id": "gpt-4o-mini", "object": "model", "created": CREATED, "owned_by": "openai"}
MODEL_EXTRAS = {**MODEL, "permission": [], "root": "gpt-4o-mini", "parent": None,
                "metadata": {"provider": "x", "context_length": 8192}}
MODELS_LIST = {"object": "list", "data": [MODEL, MODEL_EXTRAS]}


# ------------------------------------------------------------------------ valid cases

VALID = [
    pytest.param(validate_chat_completion, CHAT_COMPLETION, id="chat-completion"),
    pytest.param(validate_chat_completion, CHAT_COMPLETION_TOOL_CALL, id="chat-completion-tool-call"),
    pytest.param(validate_chat_chunk, CHUNK_FIRST, id="chunk-first-role"),
    pytest.param(validate_chat_chunk, CHUNK_CONTENT, id="chunk-content"),
    pytest.param(validate_chat_chunk, CHUNK_CONTENT_USAGE_NULL, id="chunk-usage-null"),
    pytest.param(validate_chat_chunk, CHUNK_TOOL_CALL, id="chunk-tool-call"),
    pytest.param(validate_chat_chunk, CHUNK_FINAL, id="chunk-final-finish-reason"),
    pytest.param(validate_chat_chunk, CHUNK_USAGE_ONLY, id="chunk-usage-only-empty-choices"),
    pytest.param(validate_completion, COMPLETION, id="text-completion"),
    pytest.param(validate_completion, COMPLETION_LOGPROBS, id="text-completion-logprobs"),
    pytest.param(validate_completion_chunk, COMPLETION_CHUNK_FINAL, id="completion-chunk-final"),
    pytest.param(validate_error, ERROR, id="error-null-param-code"),
    pytest.param(validate_error, ERROR_STRINGS, id="error-string-param-code"),
    pytest.param(validate_model, MODEL, id="model"),
    pytest.param(validate_model, MODEL_EXTRAS, id="model-extra-props"),
    pytest.param(validate_models_list, MODELS_LIST, id="models-list"),
    pytest.param(validate_models_list, {"object": "list", "data": []}, id="models-list-empty"),
]


@pytest.mark.parametrize("fn, obj", VALID)
def test_valid(fn, obj):
    before = copy.deepcopy(obj)
    fn(obj)
    assert obj == before  # validation never mutates


# ---------------------------------------------------------------------- invalid cases


def _mut(base, fn):
    obj = copy.deepcopy(base)
    fn(obj)
    return obj


def _del(path):
    def f(obj):
        *head, last = path
        for p in head:
            obj = obj[p]
        del obj[last]
    return f


def _set(path, value):
    def f(obj):
        *head, last = path
        for p in head:
            obj = obj[p]
        obj[last] = value
    return f


INVALID = [
    # chat.completion
    ("chat-missing-choices", validate_chat_completion, _mut(CHAT_COMPLETION, _del(["choices"])), "choices"),
    ("chat-missing-id", validate_chat_completion, _mut(CHAT_COMPLETION, _del(["id"])), "'id'"),
    ("chat-wrong-object", validate_chat_completion,
     _mut(CHAT_COMPLETION, _set(["object"], "chat.completion.chunk")), "$.object"),
    ("chat-created-string", validate_chat_completion,
     _mut(CHAT_COMPLETION, _set(["created"], "1700000000")), "$.created"),
    ("chat-bad-finish-reason", validate_chat_completion,
     _mut(CHAT_COMPLETION, _set(["choices", 0, "finish_reason"], "eos")), "finish_reason"),
    ("chat-null-finish-reason", validate_chat_completion,
     _mut(CHAT_COMPLETION, _set(["choices", 0, "finish_reason"], None)), "finish_reason"),
    ("chat-missing-logprobs", validate_chat_completion,
     _mut(CHAT_COMPLETION, _del(["choices", 0, "logprobs"])), "logprobs"),
    ("chat-message-missing-refusal", validate_chat_completion,
     _mut(CHAT_COMPLETION, _del(["choices", 0, "message", "refusal"])), "refusal"),
    ("chat-message-missing-content", validate_chat_completion,
     _mut(CHAT_COMPLETION, _del(["choices", 0, "message", "content"])), "content"),
    ("chat-message-role-user", validate_chat_completion,
     _mut(CHAT_COMPLETION, _set(["choices", 0, "message", "role"], "user")), "role"),
    ("chat-usage-missing-total", validate_chat_completion,
     _mut(CHAT_COMPLETION, _del(["usage", "total_tokens"])), "total_tokens"),
    ("chat-usage-null", validate_chat_completion, _mut(CHAT_COMPLETION, _set(["usage"], None)), "$.usage"),
    # chat.completion.chunk
    ("chunk-wrong-object", validate_chat_chunk,
     _mut(CHUNK_CONTENT, _set(["object"], "chat.completion")), "$.object"),
    ("chunk-missing-delta", validate_chat_chunk,
     _mut(CHUNK_CONTENT, _del(["choices", 0, "delta"])), "delta"),
    ("chunk-missing-finish-reason-key", validate_chat_chunk,
     _mut(CHUNK_CONTENT, _del(["choices", 0, "finish_reason"])), "finish_reason"),
    ("chunk-bad-finish-reason", validate_chat_chunk,
     _mut(CHUNK_FINAL, _set(["choices", 0, "finish_reason"], "done")), "finish_reason"),
    ("chunk-delta-content-int", validate_chat_chunk,
     _mut(CHUNK_CONTENT, _set(["choices", 0, "delta", "content"], 5)), "content"),
    ("chunk-usage-incomplete", validate_chat_chunk,
     _mut(CHUNK_USAGE_ONLY, _del(["usage", "prompt_tokens"])), "prompt_tokens"),
    ("chunk-tool-call-missing-index", validate_chat_chunk,
     _mut(CHUNK_TOOL_CALL, _del(["choices", 0, "delta", "tool_calls", 0, "index"])), "index"),
    # text_completion
    ("completion-missing-text", validate_completion,
     _mut(COMPLETION, _del(["choices", 0, "text"])), "text"),
    ("completion-missing-logprobs", validate_completion,
     _mut(COMPLETION, _del(["choices", 0, "logprobs"])), "logprobs"),
    ("completion-wrong-object", validate_completion,
     _mut(COMPLETION, _set(["object"], "chat.completion")), "$.object"),
    ("completion-finish-reason-tool-calls", validate_completion,
     _mut(COMPLETION, _set(["choices", 0, "finish_reason"], "tool_calls")), "finish_reason"),
    # error envelope
    ("error-flat", validate_error, ERROR["error"], "'error'"),
    ("error-missing-param", validate_error, _mut(ERROR, _del(["error", "param"])), "param"),
    ("error-missing-code", validate_error, _mut(ERROR, _del(["error", "code"])), "code"),
    ("error-int-code", validate_error, _mut(ERROR, _set(["error", "code"], 400)), "code"),
    ("error-missing-message", validate_error, _mut(ERROR, _del(["error", "message"])), "message"),
    ("error-null-type", validate_error, _mut(ERROR, _set(["error", "type"], None)), "type"),
    # model / list
    ("model-missing-owned-by", validate_model, _mut(MODEL, _del(["owned_by"])), "owned_by"),
    ("model-wrong-object", validate_model, _mut(MODEL, _set(["object"], "models")), "$.object"),
    ("model-created-float", validate_model, _mut(MODEL, _set(["created"], 1.5)), "$.created"),
    ("list-wrong-object", validate_models_list, {"object": "models", "data": []}, "$.object"),
    ("list-data-dict", validate_models_list, {"object": "list", "data": {}}, "$.data"),
    ("list-bad-entry", validate_models_list, {"object": "list", "data": [{"id": "m"}]}, "$.data[0]"),
]


@pytest.mark.parametrize(
    "fn, obj, needle", [pytest.param(*case[1:], id=case[0]) for case in INVALID]
)
def test_invalid(fn, obj, needle):
    with pytest.raises(AssertionError) as exc:
        fn(obj)
    first_line = str(exc.value).splitlines()[0]  # the best-match path + message
    assert needle in first_line, str(exc.value)


# ------------------------------------------------------------------ semantics / helpers


def test_error_message_is_readable():
    bad = _mut(CHAT_COMPLETION, _set(["choices", 0, "finish_reason"], "eos"))
    with pytest.raises(AssertionError) as exc:
        validate_chat_completion(bad)
    msg = str(exc.value)
    assert "CreateChatCompletionResponse" in msg
    assert "$.choices[0].finish_reason" in msg
    assert "'eos' is not one of" in msg


def test_nullable_keyword_is_honoured_by_default_and_can_be_disabled():
    # finish_reason / usage in the chunk schema use OpenAPI-3.0 `nullable: true`.
    validate(CHUNK_CONTENT_USAGE_NULL, "CreateChatCompletionStreamResponse")
    with pytest.raises(AssertionError, match="finish_reason"):
        validate(CHUNK_CONTENT, "CreateChatCompletionStreamResponse", honor_nullable=False)
    with pytest.raises(AssertionError, match=r"\$\.usage"):
        validate(_chunk([], usage=None), "CreateChatCompletionStreamResponse", honor_nullable=False)


def test_completion_chunk_null_finish_reason_is_a_spec_bug():
    # CreateCompletionResponse.choices[].finish_reason is a non-nullable enum, but real
    # (and the spec's own example) non-final legacy stream chunks send null.
    with pytest.raises(AssertionError, match="finish_reason"):
        validate_completion_chunk(COMPLETION_CHUNK_MID)
    validate_completion_chunk(COMPLETION_CHUNK_MID, allow_null_finish_reason=True)
    validate_completion_chunk(COMPLETION_CHUNK_FINAL, allow_null_finish_reason=True)
    # the relaxation touches finish_reason only
    with pytest.raises(AssertionError, match="text"):
        validate_completion_chunk(
            _mut(COMPLETION_CHUNK_MID, _del(["choices", 0, "text"])), allow_null_finish_reason=True
        )
    with pytest.raises(AssertionError, match="finish_reason"):
        validate_completion_chunk(
            _mut(COMPLETION_CHUNK_MID, _set(["choices", 0, "finish_reason"], "eos")),
            allow_null_finish_reason=True,
        )
    # and the spec document itself is left untouched
    fr = openai_spec.schema("CreateCompletionResponse")["properties"]["choices"]["items"][
        "properties"]["finish_reason"]
    assert fr == {"type": "string", "description": fr["description"],
                  "enum": ["stop", "length", "content_filter"]}


def test_unknown_schema_name():
    with pytest.raises(KeyError, match="NoSuchSchema"):
        validate({}, "NoSuchSchema")


def test_spec_path_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_SPEC_PATH", raising=False)
    repo_root = Path(openai_spec.__file__).resolve().parents[1]
    assert openai_spec.spec_path() == repo_root / "tests" / "data" / "openai.openapi.trimmed.json"
    monkeypatch.setenv("OPENAI_SPEC_PATH", str(tmp_path / "x.yaml"))
    assert openai_spec.spec_path() == tmp_path / "x.yaml"


def test_spec_loaded_once_and_stats_recorded():
    spec = openai_spec.load_spec()
    assert openai_spec.load_spec() is spec
    assert spec["openapi"].startswith("3.1")
    assert openai_spec.LOAD_STATS["source"] in ("json", "yaml", "cache")
    assert openai_spec.LOAD_STATS["seconds"] >= 0


def test_vendored_spec_lives_in_the_repository():
    """A fresh clone has nothing beside it: the default spec is a file of the repository."""
    repo_root = Path(openai_spec.__file__).resolve().parents[1]
    default = openai_spec._DEFAULT_SPEC
    assert default.is_file()
    assert default.resolve().is_relative_to(repo_root)


def test_vendored_spec_is_closed_under_refs():
    """Every $ref in the trimmed copy resolves inside it, and every root is there."""
    from tests.tools import trim_openai_spec as trim

    schemas = openai_spec.load_spec()["components"]["schemas"]
    missing = {ref for sch in schemas.values() for ref in trim._refs(sch)} - set(schemas)
    assert not missing
    assert set(trim.ROOTS) <= set(schemas)


def test_vendored_spec_says_where_it_comes_from():
    info = openai_spec.load_spec()["info"]
    source = info["x-trimmed"]
    assert "openai-openapi" in source["from"] and source["version"] == info["version"]
    assert len(source["commit"]) == 40 and len(source["sha256"]) == 64


def test_trimming_keeps_exactly_what_the_roots_reach():
    from tests.tools import trim_openai_spec as trim

    spec = openai_spec.load_spec()
    again = trim.trim(spec, trim.ROOTS, spec["info"]["x-trimmed"])
    assert again["components"]["schemas"] == spec["components"]["schemas"]
    small = trim.trim(spec, ["ErrorResponse"], {})["components"]["schemas"]
    assert set(small) == {"ErrorResponse", "Error"}
