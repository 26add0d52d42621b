"""`response_format` in the form each model takes, and JSON answers back as text.

Classic Workers AI models take JSON mode as `{type, json_schema: <bare schema>}` and
answer the parsed object in `result.response`; OpenAI-shaped ones take OpenAI's own
`{name, schema, strict}` wrapper; some have only `guided_json: <schema>`. Which one a
model takes is read from its schema (gateway/cloudflare/capabilities.py).
https://developers.cloudflare.com/workers-ai/features/json-mode/
"""
ANY_OBJECT = {"type": "object"}


def upstream_format(response_format, capabilities):
    """The payload keys that ask the model for JSON, in its own form."""
    kind = response_format["type"]
    spec = response_format.get("json_schema") or {}
    schema = spec.get("schema")
    form = capabilities.json_form
    if form == "wrapper":
        if kind == "json_object":
            return {"response_format": {"type": "json_object"}}
        return {"response_format": {"type": "json_schema", "json_schema": dict(spec)}}
    bare = _bare_schema(spec, schema) if kind == "json_schema" else None
    if form == "guided_json":
        return {"guided_json": bare or dict(ANY_OBJECT)}
    if kind == "json_object" and capabilities.json_object:
        return {"response_format": {"type": "json_object"}}
    return {"response_format": {"type": "json_schema", "json_schema": bare or dict(ANY_OBJECT)}}


def _bare_schema(spec, schema):
    """OpenAI's schema with its `name` as `title` (and its description), as classic models
    take it: the bare JSON Schema, not the wrapper."""
    bare = dict(schema) if isinstance(schema, dict) else dict(ANY_OBJECT)
    bare.setdefault("title", spec.get("name"))
    if spec.get("description"):
        bare.setdefault("description", spec["description"])
    return bare

