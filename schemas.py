"""Request schemas (marshmallow): what the gateway accepts, before anything goes upstream.

The ranges are the original cf-ai-endpoint contract, which copies Workers AI's own
text-generation schema (temperature 0-5, top_p 0-2, penalties 0-2, ...). JSON `null`
counts as absent, booleans are never numbers, and parameters that would change the
output but are not implemented are refused by name rather than dropped silently.
Unknown keys are dropped: nothing is forwarded that the gateway does not know.
"""
from marshmallow import (EXCLUDE, RAISE, ValidationError, fields, post_load, pre_load, validate,
                         validates_schema)

from gateway.openai.schema_base import Schema

ROLES = ("system", "user", "assistant", "tool", "developer")
FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
NAME_ERROR = "Must be 1-64 letters, digits, underscores or dashes."
MAX_STOP = 4
NOT_IMPLEMENTED = "is not supported by this gateway yet"
# Model names become a URL path upstream: no dot segments, no empty segments, safe characters.
# \Z, not $: `$` also matches before a trailing newline ("@cf/x/ok\n" would pass).
MODEL_NAME = r"^(?!.*(^|/)\.{1,2}(/|\Z))(?!.*//)[A-Za-z0-9@][A-Za-z0-9@._:+/-]{0,199}\Z"


class StrictBoolean(fields.Boolean):
    """Only JSON true/false, not "true" or 1."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value is not True and value is not False:
            raise self.make_error("invalid")
        return value


class StrictNumber(fields.Float):
    """Only JSON numbers: no strings, no booleans."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictInteger(fields.Integer):
    """Only JSON integers (5.0 and "5" are refused)."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class ChatContent(fields.Field):
    """A message content: a string, or a list of parts (text parts only are joined into one
    string; with `image_url` parts the list is kept, each part normalised)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValidationError("Must be a string or a list of content parts.")
        parts = [_content_part(index, part) for index, part in enumerate(value)]
        if all(part["type"] == "text" for part in parts):
            return "".join(part["text"] for part in parts)
        return parts


def _content_part(index, part):
    if not isinstance(part, dict):
        raise ValidationError({index: ["Must be an object."]})
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise ValidationError({index: {"text": ["Must be a string."]}})
        return {"type": "text", "text": part["text"]}
    if kind == "image_url":
        image = part.get("image_url")
        if isinstance(image, str):  # some clients send the URL itself
            image = {"url": image}
        if not isinstance(image, dict) or not isinstance(image.get("url"), str) \
                or not image["url"]:
            raise ValidationError({index: {"image_url": ["Must be an object with a 'url'."]}})
        detail = image.get("detail")
        if detail is not None and detail not in ("auto", "low", "high"):
            raise ValidationError({index: {"image_url": {"detail": [
                "Must be one of: auto, low, high."]}}})
        return {"type": "image_url", "image_url": {"url": image["url"]}}
    raise ValidationError({index: {"type": [
        f"Only 'text' and 'image_url' content parts are supported, not {kind!r}."]}})


def _drop_nulls(data):
    """JSON null means "not given"."""
    if isinstance(data, dict):
        return {key: value for key, value in data.items() if value is not None}
    return data


def _refuse(name, value, allowed):
    """Raise a ValidationError for a not-implemented parameter unless `allowed(value)`."""
    if not allowed(value):
        raise ValidationError({name: [f"'{name}' {NOT_IMPLEMENTED}."]})


class StreamOptions(Schema):
    """`stream_options`: only include_usage is meaningful here."""

    class Meta:
        unknown = EXCLUDE

    include_usage = StrictBoolean(load_default=False)

    @pre_load
    def drop_nulls(self, data, **kwargs):
        return _drop_nulls(data)


class FunctionCall(Schema):
    """`function` of an assistant tool call: `arguments` is a JSON string."""

    class Meta:
        unknown = EXCLUDE

    name = fields.String(required=True)
    arguments = fields.String(load_default="{}")

    @pre_load
    def drop_nulls(self, data, **kwargs):
        return _drop_nulls(data)


class ToolCall(Schema):
    """One tool call of an earlier assistant turn."""

    class Meta:
        unknown = EXCLUDE

    id = fields.String(required=True, validate=validate.Length(min=1))
    type = fields.String(load_default="function", validate=validate.Equal("function"))
    function = fields.Nested(FunctionCall, required=True)


class Message(Schema):
    """One chat message; `developer` is sent upstream as `system`."""

    class Meta:
        unknown = EXCLUDE

    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    content = ChatContent(required=True)
    name = fields.String()
    tool_calls = fields.List(fields.Nested(ToolCall))
    tool_call_id = fields.String()

    @pre_load
    def normalise(self, data, **kwargs):
        """null assistant content is "", legacy function turns become tool turns; only
        assistants call tools and only users send images (checked here: one hook per message
        is what validation of a long history costs)."""
        if not isinstance(data, dict):
            return data
        role = data.get("role")
        if role == "assistant" and data.get("content") is None:
            data = {**data, "content": ""}
        if "tool_calls" in data and not data["tool_calls"]:
            data = {k: v for k, v in data.items() if k != "tool_calls"}
        if role == "function":  # legacy function result: a tool message
            data = {**data, "role": "tool", "tool_call_id": data.get("name") or "function"}
        call = data.get("function_call")
        if role == "assistant" and isinstance(call, dict) and "tool_calls" not in data:
            data = {**data, "tool_calls": [{"id": call.get("name") or "function",
                                            "type": "function", "function": call}]}
        if role == "tool" and not data.get("tool_call_id"):  # OpenAI requires it too
            raise ValidationError({"tool_call_id": ["Missing data for required field."]})
        if data.get("tool_calls") and role != "assistant":
            raise ValidationError({"tool_calls": ["Only assistant messages carry tool calls."]})
        content = data.get("content")
        if isinstance(content, list) and role not in ("user", None) and any(
                isinstance(p, dict) and p.get("type") == "image_url" for p in content):
            raise ValidationError({"content": ["Only user messages may hold images."]})
        return _drop_nulls(data)


class FunctionDefinition(Schema):
    """A function the model may call (`tools[].function`, or a legacy `functions` item)."""

    class Meta:
        unknown = EXCLUDE

    name = fields.String(required=True, validate=validate.Regexp(FUNCTION_NAME, error=NAME_ERROR))
    description = fields.String()
    parameters = fields.Dict()
    strict = StrictBoolean()

    @pre_load
    def drop_nulls(self, data, **kwargs):
        return _drop_nulls(data)


class Tool(Schema):
    """`{"type": "function", "function": {...}}`."""

    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True, validate=validate.Equal(
        "function", error="Only 'function' tools are supported."))
    function = fields.Nested(FunctionDefinition, required=True)


class ToolChoice(fields.Field):
    """`none`, `auto`, `required` or `{"type": "function", "function": {"name": ...}}`;
    returned as the mode string or the function's name in a dict `{"name": ...}`."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value in ("none", "auto", "required"):
            return value
        if isinstance(value, dict):
            function = value.get("function")
            if value.get("type") == "function" and isinstance(function, dict) \
                    and isinstance(function.get("name"), str):
                return {"name": function["name"]}
        raise ValidationError("Must be 'none', 'auto', 'required' or "
                              "{\"type\": \"function\", \"function\": {\"name\": ...}}.")


class FunctionCallChoice(fields.Field):
    """Legacy `function_call`: `none`, `auto` or `{"name": ...}`."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value in ("none", "auto"):
            return value
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            return {"name": value["name"]}
        raise ValidationError("Must be 'none', 'auto' or {\"name\": ...}.")


class JsonSchemaFormat(Schema):
    """`response_format.json_schema`: OpenAI's `{name, description, schema, strict}`."""

    class Meta:
        unknown = EXCLUDE

    name = fields.String(required=True, validate=validate.Regexp(FUNCTION_NAME, error=NAME_ERROR))
    description = fields.String()
    schema = fields.Dict()
    strict = StrictBoolean()

    @pre_load
    def drop_nulls(self, data, **kwargs):
        return _drop_nulls(data)


class ResponseFormat(Schema):
    """`response_format`: text, json_object or json_schema."""

    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True, validate=validate.OneOf(
        ("text", "json_object", "json_schema")))
    json_schema = fields.Nested(JsonSchemaFormat)

    @validates_schema
    def schema_for_json_schema(self, data, **kwargs):
        if data["type"] == "json_schema" and "json_schema" not in data:
            raise ValidationError("Required with type 'json_schema'.", "json_schema")


class Stop(fields.Field):
    """`stop`: a string or up to four strings, none empty; returned as a list."""

    def _deserialize(self, value, attr, data, **kwargs):
        stops = [value] if isinstance(value, str) else value
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise ValidationError("Must be a string or a list of strings.")
        if len(stops) > MAX_STOP:
            raise ValidationError(f"Must hold at most {MAX_STOP} sequences.")
        if any(s == "" for s in stops):
            raise ValidationError("Stop sequences must not be empty.")
        return stops


class GenerationRequest(Schema):
    """What chat and text completions share: the model and the sampling parameters."""

    class Meta:
        unknown = EXCLUDE

    model = fields.String(required=True, validate=validate.Regexp(
        MODEL_NAME,
        error="Must be a Workers AI model name such as @cf/meta/llama-3.1-8b-instruct."))
    stream = StrictBoolean(load_default=False)
    stream_options = fields.Nested(StreamOptions)
    max_tokens = StrictInteger(validate=validate.Range(min=1))
    max_completion_tokens = StrictInteger(validate=validate.Range(min=1))
    temperature = StrictNumber(load_default=0.6, validate=validate.Range(0, 5))
    top_p = StrictNumber(validate=validate.Range(0, 2))
    top_k = StrictInteger(validate=validate.Range(1, 50))
    frequency_penalty = StrictNumber(validate=validate.Range(0, 2))
    presence_penalty = StrictNumber(validate=validate.Range(0, 2))
    repetition_penalty = StrictNumber(validate=validate.Range(0, 2))
    seed = StrictInteger(validate=validate.Range(1, 9999999999))
    stop = Stop()
    # Informational: accepted, never forwarded.
    user = fields.String()
    metadata = fields.Dict()
    store = StrictBoolean()

    @pre_load
    def refuse_unimplemented(self, data, **kwargs):
        if not isinstance(data, dict):
            raise ValidationError("The request body must be a JSON object.", field_name="_schema")
        data = _drop_nulls(data)
        if data.get("stop") == []:
            del data["stop"]
        for name, allowed in self.unimplemented.items():
            if name in data:
                _refuse(name, data[name], allowed)
        return data

    # Parameters that change the output: allowed only in their do-nothing form.
    unimplemented = {
        "n": lambda v: v == 1 and not isinstance(v, bool),
        "logprobs": lambda v: v is False or v == 0 and not isinstance(v, bool),
        "top_logprobs": lambda v: v == 0 and not isinstance(v, bool),
        "logit_bias": lambda v: v == {},
        "response_format": lambda v: isinstance(v, dict) and v.get("type") == "text",
        "tools": lambda v: v == [],
        "functions": lambda v: v == [],
        "tool_choice": lambda v: v == "none",
        "function_call": lambda v: v == "none",
        "audio": lambda v: False,
        "modalities": lambda v: v == ["text"],
        "prediction": lambda v: False,
    }




# What a chat request may ask for beyond plain text; whether the model can is decided later,
# from its own schema (gateway/openai/features.py).
CHAT_FEATURES = ("n", "logprobs", "top_logprobs", "response_format", "tools", "functions",
                 "tool_choice", "function_call")
CHAT_FEATURE_SET = frozenset(CHAT_FEATURES + ("parallel_tool_calls",))


class ChatCompletionRequest(GenerationRequest):
    """POST /v1/chat/completions."""

    messages = fields.List(fields.Nested(Message), required=True,
                           validate=validate.Length(min=1, error="Must hold at least one message."))
    tools = fields.List(fields.Nested(Tool))
    functions = fields.List(fields.Nested(FunctionDefinition))
    tool_choice = ToolChoice()
    function_call = FunctionCallChoice()
    parallel_tool_calls = StrictBoolean()
    response_format = fields.Nested(ResponseFormat)
    reasoning_effort = fields.String(validate=validate.Length(min=1))
    n = StrictInteger(validate=validate.Range(1, 128))
    logprobs = StrictBoolean()
    top_logprobs = StrictInteger(validate=validate.Range(0, 20))

    unimplemented = {name: allowed for name, allowed in GenerationRequest.unimplemented.items()
                     if name not in CHAT_FEATURES}

    @validates_schema
    def tool_results_answer_calls(self, data, **kwargs):
        """A `tool` message must answer a call an earlier assistant message made, as OpenAI
        requires: otherwise the model would get a result for a call it never made."""
        called = set()
        for position, message in enumerate(data.get("messages") or ()):
            for call in message.get("tool_calls") or ():
                called.add(call["id"])
            if message["role"] == "tool" and message.get("tool_call_id") not in called:
                raise ValidationError({"messages": {position: {"tool_call_id": [
                    "No earlier assistant message made a tool call with this id; a tool "
                    "message must answer one."]}}})

    @post_load
    def normalise_features(self, data, **kwargs):
        """Legacy functions become tools; do-nothing values are dropped; choices are checked."""
        if not CHAT_FEATURE_SET & data.keys():
            return data
        if "functions" in data:
            if "tools" in data:
                raise ValidationError("Send 'tools' or the legacy 'functions', not both.",
                                      "functions")
            data["tools"] = [{"type": "function", "function": f} for f in data.pop("functions")]
            data["legacy_functions"] = True
        if "function_call" in data:
            data.setdefault("tool_choice", data.pop("function_call"))
        if not data.get("tools"):
            data.pop("tools", None)
            if data.get("tool_choice") not in (None, "none", "auto"):
                raise ValidationError("'tool_choice' needs 'tools'.", "tool_choice")
            data.pop("tool_choice", None)
            data.pop("parallel_tool_calls", None)
        choice = data.get("tool_choice")
        names = [tool["function"]["name"] for tool in data.get("tools", [])]
        if isinstance(choice, dict) and choice["name"] not in names:
            raise ValidationError(f"No tool named {choice['name']!r} in 'tools'.", "tool_choice")
        if len(set(names)) != len(names):
            raise ValidationError("Tool names must be unique.", "tools")
        if data.get("response_format", {}).get("type") == "text":
            del data["response_format"]
        if data.get("n") == 1:
            del data["n"]
        if data.get("logprobs") is False:
            del data["logprobs"]
        if data.get("top_logprobs") and not data.get("logprobs"):
            raise ValidationError("'top_logprobs' needs 'logprobs': true.", "top_logprobs")
        if not data.get("top_logprobs"):
            data.pop("top_logprobs", None)
        return data


class CompletionRequest(GenerationRequest):
    """POST /v1/completions: `prompt` is a string or a list holding one string."""

    prompt = fields.Raw(required=True)

    unimplemented = {
        **GenerationRequest.unimplemented,
        "echo": lambda v: v is False,
        "suffix": lambda v: v == "",
        "best_of": lambda v: v == 1 and not isinstance(v, bool),
    }

    @pre_load
    def single_prompt(self, data, **kwargs):
        prompt = data.get("prompt") if isinstance(data, dict) else None
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            data = {**data, "prompt": prompt[0]}
            prompt = prompt[0]
        if prompt is not None and not (isinstance(prompt, str) and prompt):
            raise ValidationError(
                {"prompt": ["Must be a non-empty string or a list holding one string."]})
        return data


chat_request = ChatCompletionRequest()
completion_request = CompletionRequest()


# --- POST /v1/responses ----------------------------------------------------------------------
# The Responses API is served by translating to a chat request (gateway/openai/responses.py),
# which then passes the chat schema above as well: these schemas check the Responses shapes,
# the chat schema keeps the ranges the two APIs share.

NAME = r"^[A-Za-z0-9_-]{1,64}$"
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
USER_PARTS = ("input_text", "input_image")
ASSISTANT_PARTS = ("output_text", "refusal")


class _Strict(Schema):
    """Unknown keys dropped, JSON null meaning absent."""

    class Meta:
        unknown = EXCLUDE

    @pre_load
    def drop_nulls(self, data, **kwargs):
        return _drop_nulls(data)


class ContentPart(_Strict):
    """One part of a message's content: text, an image by URL, or an assistant's text."""

    type = fields.String(required=True)
    text = fields.String()
    refusal = fields.String()
    image_url = fields.String()
    file_id = fields.String()
    detail = fields.String(validate=validate.OneOf(("auto", "low", "high", "original")))

    @pre_load
    def check_kind(self, data, **kwargs):
        data = _drop_nulls(data)
        kind = data.get("type") if isinstance(data, dict) else None
        needs = {"input_text": "text", "output_text": "text", "refusal": "refusal",
                 "input_image": "image_url"}
        if kind == "input_image" and "file_id" in data:
            raise ValidationError({"file_id": ["Images by file_id need the Files API, which "
                                               "this gateway does not have; send image_url."]})
        if kind not in needs:
            raise ValidationError({"type": [f"Content part type {kind!r} is not supported; "
                                            f"use one of {', '.join(needs)}."]})
        if not isinstance(data.get(needs[kind]), str):
            raise ValidationError({needs[kind]: ["Must be a string."]})
        return data


class MessageContent(fields.Field):
    """A message's content: a string, or a list of content parts."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValidationError("Must be a string or a list of content parts.")
        parts = []
        for index, part in enumerate(value):
            if not isinstance(part, dict):
                raise ValidationError({index: ["Must be an object."]})
            try:
                parts.append(ContentPart().load(part))
            except ValidationError as exc:
                raise ValidationError({index: exc.messages}) from None
        return parts


class InputMessage(_Strict):
    """A message item (`type: "message"` may be left out, as in OpenAI's easy form)."""

    type = fields.String(validate=validate.Equal("message"))
    id = fields.String()
    role = fields.String(required=True,
                         validate=validate.OneOf(("user", "assistant", "system", "developer")))
    content = MessageContent(required=True)
    status = fields.String()

    @pre_load
    def check_parts(self, data, **kwargs):
        data = _drop_nulls(data)
        parts = data.get("content") if isinstance(data, dict) else None
        if isinstance(parts, list):
            allowed = ASSISTANT_PARTS if data.get("role") == "assistant" else USER_PARTS
            for index, part in enumerate(parts):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in USER_PARTS + ASSISTANT_PARTS and kind not in allowed:
                    raise ValidationError({"content": {index: {"type": [
                        f"A {data.get('role')!r} message cannot hold {kind!r} parts."]}}})
        return data


class FunctionCallItem(_Strict):
    """A tool call the model made earlier, sent back as history."""

    type = fields.String(required=True)
    id = fields.String()
    call_id = fields.String(required=True, validate=validate.Length(min=1))
    name = fields.String(required=True, validate=validate.Regexp(NAME))
    arguments = fields.String(required=True)
    status = fields.String()


class FunctionCallOutputItem(_Strict):
    """The client's result of a tool call."""

    type = fields.String(required=True)
    id = fields.String()
    call_id = fields.String(required=True, validate=validate.Length(min=1))
    output = MessageContent(required=True)
    status = fields.String()


class ReasoningInputItem(_Strict):
    """A reasoning item from an earlier answer: accepted as history, not sent upstream."""

    type = fields.String(required=True)
    id = fields.String()
    summary = fields.List(fields.Dict(), load_default=list)
    content = fields.List(fields.Dict())
    encrypted_content = fields.String()
    status = fields.String()


INPUT_ITEMS = {"message": InputMessage, "function_call": FunctionCallItem,
               "function_call_output": FunctionCallOutputItem, "reasoning": ReasoningInputItem}


class InputItems(fields.Field):
    """`input`: a string (one user message) or a list of items, checked by their type."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            if not value:
                raise ValidationError("Must not be empty.")
            return value
        if not isinstance(value, list) or not value:
            raise ValidationError("Must be a non-empty string or a non-empty list of items.")
        items = []
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise ValidationError({index: ["Must be an object."]})
            kind = item.get("type") or ("message" if "role" in item else None)
            if kind not in INPUT_ITEMS:
                raise ValidationError({index: {"type": [
                    f"Input item type {kind!r} is not supported by this gateway; use one of "
                    f"{', '.join(INPUT_ITEMS)}."]}})
            try:
                items.append({**INPUT_ITEMS[kind]().load(item), "type": kind})
            except ValidationError as exc:
                raise ValidationError({index: exc.messages}) from None
        return items


class FunctionToolSchema(_Strict):
    """A function tool in the Responses API's flat form."""

    type = fields.String(required=True)
    name = fields.String(required=True, validate=validate.Regexp(NAME, error=(
        "Must be 1-64 letters, digits, underscores or dashes.")))
    description = fields.String()
    parameters = fields.Dict()
    strict = StrictBoolean()


class Tools(fields.Field):
    """`tools`: function tools only; any other type is refused by name."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list):
            raise ValidationError("Must be a list of tools.")
        tools = []
        for index, tool in enumerate(value):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function":
                raise ValidationError({index: {"type": [
                    f"Tool type {kind!r} is not supported by this gateway; only 'function' "
                    f"tools are (Workers AI runs no hosted tools)."]}})
            try:
                tools.append(FunctionToolSchema().load(tool))
            except ValidationError as exc:
                raise ValidationError({index: exc.messages}) from None
        return tools


class ToolChoice(fields.Field):
    """`tool_choice`: none, auto, required, or `{"type": "function", "name": ...}`."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value in ("none", "auto", "required"):
            return value
        if isinstance(value, dict) and value.get("type") == "function":
            if not isinstance(value.get("name"), str) or not value["name"]:
                raise ValidationError({"name": ["Must name a function."]})
            return {"type": "function", "name": value["name"]}
        kind = value.get("type") if isinstance(value, dict) else value
        raise ValidationError(f"{kind!r} is not supported; use 'none', 'auto', 'required' or "
                              f"{{'type': 'function', 'name': ...}}.")


class TextFormat(_Strict):
    """`text.format`: text, json_object, or json_schema with a name and a schema."""

    type = fields.String(required=True,
                         validate=validate.OneOf(("text", "json_object", "json_schema")))
    name = fields.String(validate=validate.Regexp(NAME))
    schema = fields.Dict()
    description = fields.String()
    strict = StrictBoolean()

    @pre_load
    def schema_needs_name(self, data, **kwargs):
        data = _drop_nulls(data)
        if isinstance(data, dict) and data.get("type") == "json_schema":
            for key in ("name", "schema"):
                if key not in data:
                    raise ValidationError({key: ["Required for the json_schema format."]})
        return data


class TextOptions(_Strict):
    """`text`: the output format (verbosity only in its default form)."""

    format = fields.Nested(TextFormat)
    verbosity = fields.String(validate=validate.Equal(
        "medium", error=f"Verbosity other than 'medium' {NOT_IMPLEMENTED}."))


class ReasoningOptions(_Strict):
    """`reasoning`: the effort is forwarded; summaries are not produced (accepted, unused)."""

    effort = fields.String(validate=validate.OneOf(EFFORTS))
    summary = fields.String(validate=validate.OneOf(("auto", "concise", "detailed")))
    generate_summary = fields.String(validate=validate.OneOf(("auto", "concise", "detailed")))


def _metadata(value):
    """OpenAI's metadata rule: at most 16 string pairs, keys <= 64 and values <= 512 chars."""
    if len(value) > 16:
        raise ValidationError("At most 16 keys.")
    for key, item in value.items():
        if len(key) > 64 or not isinstance(item, str) or len(item) > 512:
            raise ValidationError(f"Key {key!r}: keys are strings of at most 64 characters, "
                                  f"values strings of at most 512.")


class ResponsesRequest(_Strict):
    """POST /v1/responses."""

    model = GenerationRequest._declared_fields["model"]
    input = InputItems(required=True)
    instructions = fields.String()
    max_output_tokens = StrictInteger(validate=validate.Range(min=1))
    temperature = StrictNumber(validate=validate.Range(0, 5))
    top_p = StrictNumber(validate=validate.Range(0, 2))
    tools = Tools()
    tool_choice = ToolChoice()
    parallel_tool_calls = StrictBoolean()
    text = fields.Nested(TextOptions)
    reasoning = fields.Nested(ReasoningOptions)
    stream = StrictBoolean(load_default=False)
    stream_options = fields.Dict()
    store = StrictBoolean(load_default=True)
    previous_response_id = fields.String(validate=validate.Length(min=1, max=200))
    metadata = fields.Dict(keys=fields.String(), validate=_metadata)
    user = fields.String()
    truncation = fields.String(validate=validate.OneOf(("auto", "disabled")))
    # Informational: accepted, never forwarded.
    include = fields.List(fields.String())
    service_tier = fields.String()
    safety_identifier = fields.String()
    prompt_cache_key = fields.String()
    prompt_cache_retention = fields.String()
    prompt_cache_options = fields.Dict()

    @pre_load
    def refuse_unimplemented(self, data, **kwargs):
        if not isinstance(data, dict):
            raise ValidationError("The request body must be a JSON object.", field_name="_schema")
        data = _drop_nulls(data)
        if data.get("stop") == []:
            del data["stop"]
        for name, allowed in self.unimplemented.items():
            if name in data:
                _refuse(name, data[name], allowed)
        return data

    @validates_schema
    def choice_needs_tools(self, data, **kwargs):
        """As in chat (and at OpenAI): 'required' or a named function needs `tools`."""
        if not data.get("tools") and data.get("tool_choice") not in (None, "none", "auto"):
            raise ValidationError("'tool_choice' needs 'tools'.", "tool_choice")

    # Parameters that change the output or need state this gateway lacks: do-nothing form only.
    unimplemented = {
        "background": lambda v: v is False,
        "top_logprobs": lambda v: v == 0 and not isinstance(v, bool),
        "max_tool_calls": lambda v: False,
        "prompt": lambda v: False,
        "conversation": lambda v: False,
        "context_management": lambda v: False,
    }


responses_request = ResponsesRequest()


# ---------------------------------------------------------------- embeddings, images, audio

ENCODING_FORMATS = ("float", "base64")
TRANSCRIPT_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
MODEL_FIELD_ERROR = "Must be a Workers AI model name or an alias of one."


def _model_field():
    return fields.String(required=True, validate=validate.Regexp(MODEL_NAME,
                                                                 error=MODEL_FIELD_ERROR))


class EmbeddingInput(fields.Field):
    """`input`: a string or a list of strings, none empty (token-id arrays are refused)."""

    def _deserialize(self, value, attr, data, **kwargs):
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list):
            raise ValidationError("Must be a string or a list of strings.")
        if not texts:
            raise ValidationError("Must hold at least one string.")
        if any(isinstance(t, (int, list)) and not isinstance(t, bool) for t in texts):
            raise ValidationError("Token-id arrays are not supported by this gateway; "
                                  "send the text itself.")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValidationError(f"Item {index} is not a string.")
            if not text:
                raise ValidationError(f"Item {index} is an empty string; every input must "
                                      "hold some text.")
        return texts


class _Request(Schema):
    """A request body: unknown keys dropped, JSON null meaning absent."""

    class Meta:
        unknown = EXCLUDE

    @pre_load
    def drop_nulls(self, data, **kwargs):
        if not isinstance(data, dict):
            raise ValidationError("The request body must be a JSON object.", field_name="_schema")
        return _drop_nulls(data)


class EmbeddingRequest(_Request):
    """POST /v1/embeddings."""

    model = _model_field()
    input = EmbeddingInput(required=True)
    encoding_format = fields.String(load_default="float", validate=validate.OneOf(ENCODING_FORMATS))
    dimensions = StrictInteger(validate=validate.Range(min=1))
    user = fields.String()


class ImageRequest(_Request):
    """POST /v1/images/generations (`seed`, `steps`, `negative_prompt` where the model has them)."""

    model = _model_field()
    prompt = fields.String(required=True, validate=validate.Length(min=1))
    n = StrictInteger(load_default=1, validate=validate.Range(1, 4))
    size = fields.String(validate=validate.Regexp(
        r"^(auto|[1-9][0-9]{0,4}x[1-9][0-9]{0,4})$",
        error="Must be WIDTHxHEIGHT, such as 1024x1024, or auto."))
    response_format = fields.String(load_default="b64_json", validate=validate.OneOf(
        ["b64_json"], error="Only 'b64_json' is supported: this gateway stores no files to "
                            "link to."))
    seed = StrictInteger(validate=validate.Range(min=0))
    steps = StrictInteger(validate=validate.Range(min=1))
    negative_prompt = fields.String()
    # Informational: accepted, never forwarded.
    user = fields.String()
    quality = fields.String()
    style = fields.String()


class SpeechRequest(_Request):
    """POST /v1/audio/speech."""

    model = _model_field()
    input = fields.String(required=True, validate=validate.Length(
        1, 4096, error="Must be between 1 and 4096 characters long."))
    voice = fields.String(required=True, validate=validate.Length(min=1))
    response_format = fields.String(load_default="mp3", validate=validate.OneOf(SPEECH_FORMATS))
    speed = StrictNumber(load_default=1.0, validate=validate.Range(0.25, 4.0))
    instructions = fields.String(validate=validate.Length(max=0, error=f"'instructions' "
                                                          f"{NOT_IMPLEMENTED}."))
    stream_format = fields.String(validate=validate.OneOf(
        ["audio"], error="Only 'audio' is supported: the answer is the audio bytes."))

    @pre_load
    def voice_object(self, data, **kwargs):
        """OpenAI also takes a voice as `{"id": "..."}`."""
        voice = data.get("voice") if isinstance(data, dict) else None
        if isinstance(voice, dict) and isinstance(voice.get("id"), str):
            data = {**data, "voice": voice["id"]}
        return data


class FormNumber(fields.Float):
    """A number sent as a multipart form field (text)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class TranscriptionRequest(_Request):
    """The form fields of POST /v1/audio/transcriptions and /translations (the file apart)."""

    model = _model_field()
    language = fields.String(validate=validate.Regexp(
        r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})?$", error="Must be a language code such as 'en'."))
    prompt = fields.String()
    response_format = fields.String(load_default="json", validate=validate.OneOf(
        TRANSCRIPT_FORMATS))
    temperature = FormNumber(load_default=0.0, validate=validate.Range(0, 1))
    stream = fields.String(validate=validate.OneOf(
        ["false", "False"], error=f"'stream' {NOT_IMPLEMENTED}."))
    timestamp_granularities = fields.List(fields.String(validate=validate.OneOf(
        ["segment", "word"])))


embedding_request = EmbeddingRequest()
image_request = ImageRequest()
speech_request = SpeechRequest()
transcription_request = TranscriptionRequest()


# A key's limits are compared in Redis' Lua script, whose numbers are doubles: 2^53 - 1 is the
# largest integer it holds exactly (as do SQLite and a JavaScript client of the admin API);
# 2^63 did not fit SQLite's INTEGER at all.
MAX_KEY_LIMIT = 2**53 - 1
MAX_KEY_LIFETIME = 100 * 365 * 86400  # seconds; a key that should not expire is given no expiry


class KeyRequest(Schema):
    """A new client key (POST /admin/keys, `flask keys create`); only `name` is required."""

    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Regexp(
        r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        error="Must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit."))
    models = fields.List(fields.String(validate=validate.Length(min=1, max=200)),
                         load_default=list, allow_none=True,
                         validate=validate.Length(max=100))
    rpm = StrictInteger(allow_none=True, validate=validate.Range(min=1, max=MAX_KEY_LIMIT))
    tpm = StrictInteger(allow_none=True, validate=validate.Range(min=1, max=MAX_KEY_LIMIT))
    max_parallel = StrictInteger(allow_none=True,
                                 validate=validate.Range(min=1, max=MAX_KEY_LIMIT))
    daily_tokens = StrictInteger(allow_none=True,
                                 validate=validate.Range(min=1, max=MAX_KEY_LIMIT))
    expires_in = StrictInteger(allow_none=True,
                               validate=validate.Range(min=1, max=MAX_KEY_LIFETIME))


key_request = KeyRequest()
