"""Pure translation between OpenAI's Responses API and the chat path: dicts in, dicts out.

`/v1/responses` is not a second gateway: a Responses request becomes a chat request
(`chat_request`), which then takes the chat path unchanged (validation, model
allow-list, upstream call, answer translation), and the chat completion comes back
as a `response` object (`from_chat`). Streams do the same chunk by chunk
(`gateway.openai.responses_stream`). Conversation items are kept in their resource
form (with ids, as `GET /v1/responses/{id}/input_items` lists them), so a stored
conversation can be sent upstream again as chat messages by `messages_of`.

Shapes: https://platform.openai.com/docs/api-reference/responses
"""
import secrets

TEXT_FORMAT = {"type": "text"}


def new_id(prefix):
    """An OpenAI-style Responses id such as `resp_...` or `msg_...`."""
    return f"{prefix}_{secrets.token_hex(24)}"


# --- request side ------------------------------------------------------------------------------

def _input_part(part):
    if part["type"] == "input_image":
        return {"type": "input_image", "image_url": part["image_url"],
                "detail": part.get("detail", "auto")}
    return {"type": "input_text", "text": part.get("text", "")}


def _output_part(part):
    if part["type"] == "refusal":
        return {"type": "refusal", "refusal": part["refusal"]}
    return output_text(part["text"])


def output_text(text):
    """An `output_text` content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _as_item(item):
    """One validated input item in its stored resource form (ids made up where missing)."""
    kind = item["type"]
    if kind == "message":
        content = item["content"]
        if isinstance(content, str):
            content = [{"type": "output_text" if item["role"] == "assistant" else "input_text",
                        "text": content}]
        convert = _output_part if item["role"] == "assistant" else _input_part
        return {"id": item.get("id") or new_id("msg"), "type": "message", "role": item["role"],
                "status": "completed", "content": [convert(part) for part in content]}
    if kind == "function_call":
        return {"id": item.get("id") or new_id("fc"), "type": "function_call",
                "status": "completed", "call_id": item["call_id"], "name": item["name"],
                "arguments": item["arguments"]}
    if kind == "function_call_output":
        output = item["output"]
        if not isinstance(output, str):
            output = [_input_part(part) for part in output]
        return {"id": item.get("id") or new_id("fco"), "type": "function_call_output",
                "status": "completed", "call_id": item["call_id"], "output": output}
    return {**item, "id": item.get("id") or new_id("rs")}  # reasoning: history only


def input_items(request):
    """The request's `input` as stored items: a string is one user message."""
    given = request["input"]
    if isinstance(given, str):
        given = [{"type": "message", "role": "user", "content": given}]
    return [_as_item(item) for item in given]


def _chat_content(content):
    """Chat content for stored parts: a string when it is all text, else chat parts."""
    if isinstance(content, str):
        return content
    if all(part["type"] in ("input_text", "output_text", "refusal") for part in content):
        return "".join(part.get("text", part.get("refusal", "")) for part in content)
    return [{"type": "image_url", "image_url": {"url": part["image_url"],
                                                "detail": part.get("detail", "auto")}}
            if part["type"] == "input_image" else {"type": "text", "text": part.get("text", "")}
            for part in content]


def messages_of(items, origins):
    """Chat messages for stored items, and for each message the param it came from.

    Consecutive function calls join the assistant message before them (one turn with
    parallel tool calls), a result carries its function's name; reasoning items are
    history only and are not sent back.
    """
    messages, sources, names = [], [], {}
    for item, origin in zip(items, origins, strict=True):
        kind = item["type"]
        if kind == "message":
            messages.append({"role": item["role"], "content": _chat_content(item["content"])})
        elif kind == "function_call":
            names[item["call_id"]] = item["name"]
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
                if not messages[-1]["content"]:
                    messages[-1]["content"] = None
                continue
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            result = {"role": "tool", "tool_call_id": item["call_id"],
                      "content": _chat_content(item["output"])}
            if item["call_id"] in names:  # some models want the function's name with its result
                result["name"] = names[item["call_id"]]
            messages.append(result)
        else:
            continue
        sources.append(origin)
    return messages, sources


def _chat_tool(tool):
    function = {key: tool[key] for key in ("name", "description", "parameters", "strict")
                if key in tool}
    return {"type": "function", "function": function}


def _chat_format(text_format):
    if text_format["type"] == "json_schema":
        schema = {key: text_format[key] for key in ("name", "schema", "description", "strict")
                  if key in text_format}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": text_format["type"]}


# Responses parameters that the chat request carries under another name.
RENAMED = {"max_output_tokens": "max_completion_tokens"}
SAME_NAME = ("temperature", "top_p", "user", "parallel_tool_calls")


def chat_request(request, history):
    """The chat request for a validated Responses request after `history` (stored items).

    Returns (every item of the conversation, to store; the chat request; per chat message
    the Responses param it came from, so that a chat validation error can name what the
    client actually sent, see `chat_error`).
    """
    items = history + input_items(request)
    given = "input" if isinstance(request["input"], str) else None
    origins = ["previous_response_id"] * len(history) + [
        given or f"input[{index}]" for index in range(len(items) - len(history))]
    messages, sources = messages_of(items, origins)
    if request.get("instructions"):
        messages.insert(0, {"role": "developer", "content": request["instructions"]})
        sources.insert(0, "instructions")
    chat = {"model": request["model"], "messages": messages, "stream": request["stream"]}
    if request["stream"]:
        chat["stream_options"] = {"include_usage": True}
    for name, chat_name in RENAMED.items():
        if name in request:
            chat[chat_name] = request[name]
    chat.update({name: request[name] for name in SAME_NAME if name in request})
    if request.get("tools"):
        chat["tools"] = [_chat_tool(tool) for tool in request["tools"]]
        choice = request.get("tool_choice")
        if isinstance(choice, dict):
            choice = {"type": "function", "function": {"name": choice["name"]}}
        if choice is not None:
            chat["tool_choice"] = choice
    text_format = (request.get("text") or {}).get("format")
    if text_format and text_format["type"] != "text":
        chat["response_format"] = _chat_format(text_format)
    effort = (request.get("reasoning") or {}).get("effort")
    if effort:
        chat["reasoning_effort"] = effort
    return items, chat, sources


# Chat params (first path segment) whose errors name another Responses param.
CHAT_PARAMS = {"max_completion_tokens": "max_output_tokens", "max_tokens": "max_output_tokens",
               "response_format": "text.format", "reasoning_effort": "reasoning.effort",
               "messages": "input"}


def responses_param(param, sources):
    """The Responses param for a chat param such as `messages[2].content` or `tools[0]`."""
    if not param:
        return param
    head, _, rest = param.partition(".")
    name, bracket, index = head.partition("[")
    if name == "messages" and bracket:
        position = int(index.rstrip("]")) if index.rstrip("]").isdigit() else -1
        return sources[position] if 0 <= position < len(sources) else "input"
    if name == "tools" and rest.startswith("function."):
        rest = rest[len("function."):]
    name = CHAT_PARAMS.get(name, name)
    head = name + (bracket + index if bracket else "")
    return f"{head}.{rest}" if rest else head


def chat_error(error, sources):
    """Rename the param of an error raised on the chat path to the Responses one."""
    if error.param:
        renamed = responses_param(error.param, sources)
        error.message = error.message.replace(f"'{error.param}'", f"'{renamed}'")
        error.param = renamed
    return error
