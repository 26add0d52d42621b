"""Capabilities read from each model family's schema (gateway/cloudflare/capabilities.py)."""
import pytest

from gateway.cloudflare.capabilities import derive, properties_of
from tests import fake_model_families as families


def record(**props):
    return {"properties": [{"property_id": k, "value": v} for k, v in props.items()]}


FAMILY_CASES = [
    pytest.param(families.classic(), {}, dict(
        tools=False, json_form=None, stop=False, vision=None, reasoning_effort=False, n=False),
        id="classic-none"),
    pytest.param(families.classic_tools(), {"function_calling": "true"}, dict(
        tools=True, tool_form="openai", tool_description_required=True,
        parameter_description_required=True, tool_choice=False, json_form="bare",
        json_object=True, stop=False, vision=None, content_nullable=False,
        content_parts=False), id="classic-tools"),
    pytest.param(families.classic_guided(), {}, dict(
        tools=True, json_form="guided_json", vision="parts", content_parts=True,
        tool_call_id_pattern="[a-zA-Z0-9]{9}", stop=False), id="classic-guided"),
    pytest.param(families.classic_guided(response_format=True), {}, dict(
        json_form="bare", vision="parts"), id="classic-scout-both-forms"),
    pytest.param(families.classic_vision(), {"vision": "true"}, dict(
        vision="image", image_string=True, tools=True), id="classic-vision-image"),
    pytest.param(families.hybrid(), {"reasoning": "true"}, dict(
        tools=True, tool_choice=False, json_form="bare", reasoning=True, stop=False),
        id="hybrid"),
    pytest.param(families.openai(vision=True), {}, dict(
        tools=True, tool_form="openai", tool_description_required=False, tool_choice=True,
        parallel_tool_calls=True, json_form="wrapper", json_object=True, stop=True,
        vision="parts", content_nullable=True, n=True, logprobs=True, top_logprobs=True,
        reasoning_effort=False), id="openai-vision"),
    pytest.param(families.openai(reasoning_effort=("low", "high")), {"reasoning": "true"}, dict(
        vision=None, reasoning=True, reasoning_effort=True, reasoning_efforts=("low", "high")),
        id="openai-reasoning"),
]


@pytest.mark.parametrize("schema, props, expected", FAMILY_CASES)
def test_family_capabilities(schema, props, expected):
    capabilities = derive(schema, record(**props))
    assert capabilities.known
    for name, value in expected.items():
        assert getattr(capabilities, name) == value, name


def test_unreadable_schema_knows_nothing_but_keeps_catalogue_reasoning():
    capabilities = derive(None, record(reasoning="true", function_calling="true"))
    assert not capabilities.known and not capabilities.tools and capabilities.reasoning
    assert capabilities.summary()["streaming"] is True


def test_catalogue_can_veto_tools():
    assert derive(families.classic_tools(), record(function_calling="false")).tools is False
    assert derive(families.classic_tools(), record()).tools is True


def test_local_refs_are_followed():
    schema = {"input": {"$defs": {"msgs": {"type": "array", "items": {"type": "object"}},
                                  "stop": {"type": "string"}},
                        "type": "object",
                        "properties": {"messages": {"$ref": "#/$defs/msgs"},
                                       "stop": {"$ref": "#/$defs/stop"},
                                       "tools": {"type": "array",
                                                 "items": {"$ref": "#/$defs/tool"}}}},
              "output": {}}
    schema["input"]["$defs"]["tool"] = {"type": "object", "properties": {
        "type": {"type": "string"}, "function": {"type": "object"}}}
    capabilities = derive(schema)
    assert capabilities.stop and capabilities.tools and capabilities.tool_form == "openai"


def test_cyclic_refs_do_not_loop():
    schema = {"input": {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
                        "type": "object", "properties": {"messages": {"$ref": "#/$defs/a"}}}}
    assert derive(schema).known


def test_properties_of_reads_any_value_shape():
    props = properties_of(record(reasoning_effort={"supported_efforts": ["low"]},
                                 context_window=128000))
    assert props == {"reasoning_effort": {"supported_efforts": ["low"]},
                     "context_window": 128000}


def test_efforts_fall_back_to_the_catalogue():
    schema = families.openai()
    schema["input"]["oneOf"][1]["properties"]["reasoning_effort"] = {"type": "string"}
    capabilities = derive(schema, record(reasoning_effort={"supported_efforts": ["low", "max"]}))
    assert capabilities.reasoning_efforts == ("low", "max")
