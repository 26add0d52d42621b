"""JSON mode in each model's form (gateway/openai/formats.py)."""
import pytest

from gateway.cloudflare.capabilities import derive
from gateway.openai.formats import upstream_format
from tests import fake_model_families as families

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA,
                                                     "strict": True}}


@pytest.mark.parametrize("schema, request_format, expected", [
    pytest.param(families.classic_tools(), JSON_SCHEMA, {"response_format": {
        "type": "json_schema", "json_schema": {**SCHEMA, "title": "person"}}}, id="bare"),
    pytest.param(families.classic_tools(), {"type": "json_object"},
                 {"response_format": {"type": "json_object"}}, id="bare-json_object"),
    pytest.param(families.openai(), JSON_SCHEMA, {"response_format": JSON_SCHEMA},
                 id="wrapper"),
    pytest.param(families.classic_guided(), JSON_SCHEMA,
                 {"guided_json": {**SCHEMA, "title": "person"}}, id="guided_json"),
    pytest.param(families.classic_guided(), {"type": "json_object"},
                 {"guided_json": {"type": "object"}}, id="guided_json-object"),
])
def test_upstream_format(schema, request_format, expected):
    assert upstream_format(request_format, derive(schema)) == expected


def test_schema_without_json_object_gets_an_object_schema():
    schema = families.classic_tools()
    branch = schema["input"]["oneOf"][1]["properties"]["response_format"]
    branch["properties"]["type"]["enum"] = ["json_schema"]
    assert upstream_format({"type": "json_object"}, derive(schema)) == {
        "response_format": {"type": "json_schema", "json_schema": {"type": "object"}}}
