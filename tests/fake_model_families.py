"""The per-model input schemas the fake Workers AI serves on ``ai/models/schema``.

Modelled on Cloudflare's catalogue schemas (the model pages' "API schema", the 2024
``/ai/run/{model}`` request bodies of Cloudflare's OpenAPI document, and the
``@cloudflare/workers-types`` AI types), one family at a time:

* ``classic``: prompt or messages with string content, sampling knobs, no tools, no JSON
  mode, no images, no stop (the default for classic models: "a model with none of these");
* ``classic_tools``: classic input plus ``tools`` (flat ``{name, description, parameters}`` or
  ``{type, function}``, descriptions required) and ``response_format`` with a bare schema;
  answers ``tool_calls: [{name, arguments: <object>}]`` with no ids and no finish_reason,
  JSON mode answers ``response`` as an object (llama-3.3, hermes-2-pro);
* ``classic_guided``: content parts with data-URL ``image_url``, ``tool_call_id`` (pattern
  ``[a-zA-Z0-9]{9}``) and ``guided_json`` instead of ``response_format`` (mistral-small-3.1,
  gemma-3); llama-4-scout has both and answers ``{id, type, function: {arguments: <object>}}``;
* ``classic_vision``: a top-level ``image`` (a data-URL string or byte array), string content
  (llama-3.2-11b-vision);
* ``hybrid``: classic input, OpenAI-shaped output with ``reasoning_content`` (qwen3-30b);
* ``openai``: OpenAI's Chat Completions input (``tool_choice``, ``stop``, ``n``, ``logprobs``,
  the ``{name, schema, strict}`` wrapper, ``reasoning_effort`` where the catalogue says so).

Extra catalogue records for models the default catalogue lacks are in ``EXTRA_MODELS``;
tests that need them start the fake with ``DEFAULT_CATALOGUE + EXTRA_MODELS``.
"""
import copy
import zlib

SAMPLING = {
    "max_tokens": {"type": "integer", "default": 256},
    "temperature": {"type": "number", "default": 0.6, "minimum": 0, "maximum": 5},
    "top_p": {"type": "number", "minimum": 0, "maximum": 2},
    "top_k": {"type": "integer", "minimum": 1, "maximum": 50},
    "seed": {"type": "integer", "minimum": 1, "maximum": 9999999999},
    "repetition_penalty": {"type": "number", "minimum": 0, "maximum": 2},
    "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
    "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
    "stream": {"type": "boolean", "default": False},
}
PROMPT = {"title": "Prompt", "type": "object", "required": ["prompt"],
          "properties": {"prompt": {"type": "string", "minLength": 1},
                         "raw": {"type": "boolean", "default": False},
                         "lora": {"type": "string"}, **SAMPLING}}
STRING_MESSAGE = {"type": "object", "required": ["role", "content"],
                  "properties": {"role": {"type": "string"},
                                 "content": {"type": "string", "maxLength": 131072}}}
PARAMETERS = {"type": "object", "required": ["type", "properties"],
              "properties": {"type": {"type": "string"},
                             "required": {"type": "array", "items": {"type": "string"}},
                             "properties": {"type": "object", "additionalProperties": {
                                 "type": "object", "required": ["type", "description"],
                                 "properties": {"type": {"type": "string"},
                                                "description": {"type": "string"}}}}}}
FUNCTION = {"type": "object", "required": ["name", "description", "parameters"],
            "properties": {"name": {"type": "string"}, "description": {"type": "string"},
                           "parameters": PARAMETERS}}
CLASSIC_TOOLS = {"type": "array", "items": {"type": "object", "oneOf": [
    {**FUNCTION, "title": "flat"},
    {"title": "openai", "type": "object", "required": ["type", "function"],
     "properties": {"type": {"type": "string"}, "function": FUNCTION}}]}}
BARE_RESPONSE_FORMAT = {"title": "JSON Mode", "type": "object", "properties": {
    "type": {"type": "string", "enum": ["json_object", "json_schema"]}, "json_schema": {}}}
EMBEDDED_FUNCTIONS = {"type": "array", "items": {
    "type": "object", "required": ["name", "code"],
    "properties": {"name": {"type": "string"}, "code": {"type": "string"}}}}
DATA_URL = {"type": "string", "pattern": "^data:*",
            "description": "image uri with data (e.g. data:image/jpeg;base64,/9j/...). "
                           "HTTP URL will not be accepted"}
PART = {"type": "object", "required": ["type"],
        "properties": {"type": {"type": "string"}, "text": {"type": "string"},
                       "image_url": {"type": "object", "properties": {"url": DATA_URL}}}}
TOOL_CALL_ID = {"type": "string", "pattern": "[a-zA-Z0-9]{9}",
                "description": "The tool call id. Must be supplied for tool calls for "
                               "Mistral-3. If you don't know what to put here you can fall "
                               "back to 000000001"}


def _classic(messages_item, extra, prompt_extra=None):
    messages = {"title": "Messages", "type": "object", "required": ["messages"],
                "properties": {"messages": {"type": "array", "items": messages_item},
                               **SAMPLING, **extra}}
    prompt = copy.deepcopy(PROMPT)
    prompt["properties"].update(prompt_extra or {})
    return {"type": "object", "oneOf": [prompt, messages]}


CLASSIC_OUTPUT = {"oneOf": [
    {"type": "object", "contentType": "application/json", "properties": {
        "response": {"type": "string"},
        "usage": {"type": "object", "properties": {
            "prompt_tokens": {"type": "number"}, "completion_tokens": {"type": "number"},
            "total_tokens": {"type": "number"}}},
        "tool_calls": {"type": "array", "items": {"type": "object", "properties": {
            "arguments": {"type": "object"}, "name": {"type": "string"}}}}}},
    {"type": "string", "contentType": "text/event-stream", "format": "binary"}]}


def classic():
    return {"input": _classic(STRING_MESSAGE, {}), "output": CLASSIC_OUTPUT}


def classic_tools():
    item = {**STRING_MESSAGE, "properties": {**STRING_MESSAGE["properties"],
                                             "name": {"type": "string"}}}
    extra = {"tools": CLASSIC_TOOLS, "functions": EMBEDDED_FUNCTIONS,
             "response_format": BARE_RESPONSE_FORMAT}
    return {"input": _classic(item, extra, {"response_format": BARE_RESPONSE_FORMAT}),
            "output": CLASSIC_OUTPUT}


def classic_guided(response_format=False):
    content = {"oneOf": [{"type": "string"}, {"type": "array", "items": PART}, PART]}
    item = {"type": "object", "required": ["role", "content"],
            "properties": {"role": {"type": "string"}, "content": content,
                           "tool_call_id": TOOL_CALL_ID}}
    extra = {"tools": CLASSIC_TOOLS, "guided_json": {"type": "object"}}
    if response_format:
        extra["response_format"] = BARE_RESPONSE_FORMAT
    return {"input": _classic(item, extra), "output": CLASSIC_OUTPUT}


def classic_vision():
    image = {"oneOf": [{"type": "array", "items": {"type": "number", "minimum": 0,
                                                   "maximum": 255}},
                       {"type": "string", "format": "binary",
                        "description": "Binary string representing the image contents."}]}
    item = {**STRING_MESSAGE, "properties": {**STRING_MESSAGE["properties"],
                                             "tool_call_id": TOOL_CALL_ID}}
    return {"input": _classic(item, {"image": image, "tools": CLASSIC_TOOLS},
                              {"image": image}),
            "output": CLASSIC_OUTPUT}


def hybrid():
    content = {"oneOf": [{"type": "string"},
                         {"type": "array", "items": {"type": "object", "properties": {
                             "type": {"type": "string"}, "text": {"type": "string"}}}}]}
    item = {"type": "object", "required": ["role", "content"],
            "properties": {"role": {"type": "string"}, "content": content}}
    response_format = {"type": "object", "properties": {
        "type": {"type": "string", "enum": ["json_object", "json_schema"]},
        "json_schema": {}}}
    schema = _classic(item, {"tools": CLASSIC_TOOLS, "response_format": response_format})
    output = {"type": "object", "properties": {"id": {"type": "string"},
                                               "object": {"type": "string"},
                                               "choices": {"type": "array"}}}
    return {"input": schema, "output": output}


def openai(vision=False, reasoning_effort=None):
    text_part = {"type": "object", "required": ["type", "text"],
                 "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}
    user_parts = [text_part]
    if vision:
        user_parts.append({"type": "object", "required": ["type", "image_url"], "properties": {
            "type": {"const": "image_url"},
            "image_url": {"type": "object", "required": ["url"], "properties": {
                "url": {"type": "string"}, "detail": {"enum": ["auto", "low", "high"]}}}}})
    tool_call = {"type": "object", "required": ["id", "type", "function"], "properties": {
        "id": {"type": "string"}, "type": {"const": "function"},
        "function": {"type": "object", "required": ["name", "arguments"], "properties": {
            "name": {"type": "string"}, "arguments": {"type": "string"}}}}}
    messages = {"type": "array", "items": {"oneOf": [
        {"type": "object", "required": ["role", "content"], "properties": {
            "role": {"enum": ["system", "developer"]},
            "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": text_part}]}}},
        {"type": "object", "required": ["role", "content"], "properties": {
            "role": {"const": "user"}, "name": {"type": "string"},
            "content": {"anyOf": [{"type": "string"},
                                  {"type": "array", "items": {"anyOf": user_parts}}]}}},
        {"type": "object", "required": ["role"], "properties": {
            "role": {"const": "assistant"},
            "content": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "tool_calls": {"type": "array", "items": tool_call}}},
        {"type": "object", "required": ["role", "content", "tool_call_id"], "properties": {
            "role": {"const": "tool"}, "content": {"type": "string"},
            "tool_call_id": {"type": "string"}}}]}}
    tool = {"type": "object", "required": ["type", "function"], "properties": {
        "type": {"const": "function"},
        "function": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "description": {"type": "string"},
            "parameters": {"type": "object"}, "strict": {"type": ["boolean", "null"]}}}}}
    response_format = {"oneOf": [
        {"type": "object", "required": ["type"], "properties": {"type": {"const": "text"}}},
        {"type": "object", "required": ["type"],
         "properties": {"type": {"const": "json_object"}}},
        {"type": "object", "required": ["type", "json_schema"], "properties": {
            "type": {"const": "json_schema"},
            "json_schema": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"}, "description": {"type": "string"},
                "schema": {"type": "object"}, "strict": {"type": ["boolean", "null"]}}}}}]}
    props = {
        "model": {"type": "string"}, "messages": messages,
        "max_tokens": {"type": "integer"}, "max_completion_tokens": {"type": "integer"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number"}, "top_k": {"type": "integer"}, "seed": {"type": "integer"},
        "repetition_penalty": {"type": "number"},
        "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object", "properties": {
            "include_usage": {"type": "boolean"}}},
        "n": {"type": "integer", "minimum": 1, "maximum": 128},
        "logprobs": {"type": "boolean"},
        "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
        "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}},
                           {"type": "null"}]},
        "tools": {"type": "array", "items": tool},
        "tool_choice": {"anyOf": [
            {"enum": ["none", "auto", "required"]},
            {"type": "object", "required": ["type", "function"], "properties": {
                "type": {"const": "function"},
                "function": {"type": "object", "required": ["name"],
                             "properties": {"name": {"type": "string"}}}}}]},
        "parallel_tool_calls": {"type": "boolean"},
        "response_format": response_format,
        "chat_template_kwargs": {"type": "object"},
    }
    if reasoning_effort:
        props["reasoning_effort"] = {"enum": list(reasoning_effort)}
    schema = {"type": "object", "oneOf": [
        {"title": "Prompt", "type": "object", "required": ["prompt"],
         "properties": {"prompt": {"type": "string"}, **{k: v for k, v in props.items()
                                                           if k != "messages"}}},
        {"title": "Messages", "type": "object", "required": ["messages"], "properties": props}]}
    output = {"type": "object", "required": ["id", "object", "created", "model", "choices"],
              "properties": {"choices": {"type": "array"}, "usage": {"type": "object"}}}
    return {"input": schema, "output": output}


# Which family each model of the fake belongs to; the rest are "classic" or, for the
# OpenAI-shaped names of the fake, "openai".
FAMILIES = {
    "@cf/meta/llama-3.3-70b-instruct-fp8-fast": "classic_tools",
    "@hf/nousresearch/hermes-2-pro-mistral-7b": "classic_tools",
    "@cf/mistralai/mistral-small-3.1-24b-instruct": "classic_guided",
    "@cf/google/gemma-3-12b-it": "classic_guided",
    "@cf/meta/llama-4-scout-17b-16e-instruct": "classic_scout",
    "@cf/meta/llama-3.2-11b-vision-instruct": "classic_vision",
    "@cf/qwen/qwen3-30b-a3b-fp8": "hybrid",
    "@cf/google/gemma-4-26b-a4b-it": "openai_vision",
    "@cf/zai-org/glm-4.7-flash": "openai_reasoning",
}
OPENAI_OUTPUT_FAMILIES = {"hybrid", "openai", "openai_vision", "openai_reasoning"}


def family_of(model, openai_shaped):
    """The family name of a model (see the module docstring)."""
    return FAMILIES.get(model, "openai" if model in openai_shaped else "classic")


def schema_of(model, openai_shaped):
    """The ``{input, output}`` schemas the fake serves for ``model``."""
    family = family_of(model, openai_shaped)
    builders = {
        "classic": classic, "classic_tools": classic_tools, "classic_guided": classic_guided,
        "classic_scout": lambda: classic_guided(response_format=True),
        "classic_vision": classic_vision, "hybrid": hybrid, "openai": openai,
        "openai_vision": lambda: openai(vision=True),
        "openai_reasoning": lambda: openai(reasoning_effort=("low", "medium", "high")),
    }
    return builders[family]()


def _record(name, description, properties, created="2025-03-01 12:00:00.000"):
    return {"id": f"fake-{zlib.crc32(name.encode()):08x}", "source": 1, "name": name,
            "description": description, "created_at": created, "tags": [],
            "task": {"id": "c329a1f9-323d-4e91-b2aa-582dd4188d34", "name": "Text Generation",
                     "description": "Family of generative text models."},
            "properties": [{"property_id": k, "value": v} for k, v in properties.items()]}


EXTRA_MODELS = [
    _record("@hf/nousresearch/hermes-2-pro-mistral-7b", "Hermes 2 Pro, function calling.",
            {"beta": "true", "context_window": "24000", "function_calling": "true"}),
    _record("@cf/meta/llama-3.2-11b-vision-instruct", "Llama 3.2 Vision.",
            {"context_window": "128000", "vision": "true"}),
    _record("@cf/qwen/qwen3-30b-a3b-fp8", "Qwen3 30B A3B.",
            {"context_window": "32768", "function_calling": "true", "reasoning": "true"}),
]
