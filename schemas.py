"""Request schemas (marshmallow): what the gateway accepts, before anything goes upstream.

The ranges are the original cf-ai-endpoint contract, which copies Workers AI's own
text-generation schema (temperature 0-5, top_p 0-2, penalties 0-2, ...). JSON `null`
counts as absent, booleans are never numbers, and parameters that would change the
output but are not implemented are refused by name rather than dropped silently.
Unknown keys are dropped: nothing is forwarded that the gateway does not know.
"""
from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load, validate

ROLES = ("system", "user", "assistant", "tool", "developer")
NOT_IMPLEMENTED = "is not supported by this gateway yet"
# Model names become a URL path upstream: no dot segments, no empty segments, safe characters.
MODEL_NAME = r"^(?!.*(^|/)\.{1,2}(/|$))(?!.*//)[A-Za-z0-9@][A-Za-z0-9@._:+/-]{0,199}$"


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


class TextContent(fields.Field):
    """A message content: a string, or a list of text parts joined into one string."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValidationError("Must be a string or a list of content parts.")
        texts = []
        for index, part in enumerate(value):
            if not isinstance(part, dict):
                raise ValidationError({index: ["Must be an object."]})
            if part.get("type") != "text":
                kind = part.get("type")
                raise ValidationError(
                    {index: {"type": [f"Only 'text' content parts are supported, not {kind!r}."]}})
            if not isinstance(part.get("text"), str):
                raise ValidationError({index: {"text": ["Must be a string."]}})
            texts.append(part["text"])
        return "".join(texts)


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


class Message(Schema):
    """One chat message; `developer` is sent upstream as `system`."""

    class Meta:
        unknown = EXCLUDE

    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    content = TextContent(required=True)
    name = fields.String()

    @pre_load
    def normalise(self, data, **kwargs):
        if isinstance(data, dict):
            if data.get("tool_calls"):
                raise ValidationError({"tool_calls": [f"'tool_calls' {NOT_IMPLEMENTED}."]})
            if data.get("role") == "assistant" and data.get("content") is None:
                data = {**data, "content": ""}
        return _drop_nulls(data)


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
    # Informational: accepted, never forwarded.
    user = fields.String()
    metadata = fields.Dict()
    store = StrictBoolean()

    @pre_load
    def refuse_unimplemented(self, data, **kwargs):
        if not isinstance(data, dict):
            raise ValidationError("The request body must be a JSON object.", field_name="_schema")
        data = _drop_nulls(data)
        for name, allowed in self.unimplemented.items():
            if name in data:
                _refuse(name, data[name], allowed)
        return data

    # Parameters that change the output: allowed only in their do-nothing form.
    unimplemented = {
        "n": lambda v: v == 1 and not isinstance(v, bool),
        "stop": lambda v: v in ("", []),
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


class ChatCompletionRequest(GenerationRequest):
    """POST /v1/chat/completions."""

    messages = fields.List(fields.Nested(Message), required=True,
                           validate=validate.Length(min=1, error="Must hold at least one message."))


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
