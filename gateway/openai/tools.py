"""OpenAI tools to Workers AI and back: pure functions over dicts.

Requests: each OpenAI tool goes upstream in the form the model's schema takes (flat
`{name, description, parameters}` or `{type, function}`), with the fields the schema
insists on filled (`description: ""`); `tool_choice` goes as it is where the schema has
it, and otherwise becomes the choice of tools to send. History keeps assistant
`tool_calls` and `tool` results with their `tool_call_id` and function `name`.
Answers: classic models give `[{name, arguments: <object>}]` with no ids, OpenAI-shaped
ones OpenAI's own calls; both become `{id, type: "function", function: {name,
arguments: <JSON string>}}` with ids kept or made up, unique within the answer.
https://developers.cloudflare.com/workers-ai/features/function-calling/traditional/
"""
import hashlib
import re
import secrets

from gateway import jsonio

EMPTY_PARAMETERS = {"type": "object", "properties": {}}


def new_call_id():
    """An OpenAI-style tool call id."""
    return "call_" + secrets.token_hex(12)


def upstream_tools(tools, tool_choice, capabilities):
    """(tools to send, tool_choice to send or None) for validated OpenAI `tools`."""
    if tool_choice == "none":
        return [], None
    chosen = tools
    forward = None
    if capabilities.tool_choice:
        if isinstance(tool_choice, dict):
            forward = {"type": "function", "function": {"name": tool_choice["name"]}}
        elif tool_choice in ("auto", "required"):
            forward = tool_choice
    elif isinstance(tool_choice, dict):  # no tool_choice upstream: only the named tool goes
        chosen = [t for t in tools if t["function"]["name"] == tool_choice["name"]]
    return [_tool(t["function"], capabilities) for t in chosen], forward


def _tool(function, capabilities):
    """One tool in the model's form, with what its schema requires filled in."""
    tool = {"name": function["name"]}
    if "description" in function or capabilities.tool_description_required:
        tool["description"] = function.get("description", "")
    parameters = function.get("parameters")
    if parameters is None and capabilities.parameters_required:
        parameters = dict(EMPTY_PARAMETERS)
    if parameters is not None:
        tool["parameters"] = _parameters(parameters, capabilities)
    if capabilities.tool_form == "flat":
        return tool
    if "strict" in function and capabilities.tool_choice:  # an OpenAI-shaped schema
        tool["strict"] = function["strict"]
    return {"type": "function", "function": tool}


def _parameters(parameters, capabilities):
    if not capabilities.parameter_description_required:
        return parameters
    filled = {"type": parameters.get("type", "object"), **parameters}
    properties = parameters.get("properties")
    filled["properties"] = {
        name: {**spec, "description": spec.get("description", "")} if isinstance(spec, dict)
        else spec for name, spec in (properties or {}).items()}
    return filled


def history_message(message, capabilities, called=None):
    """An assistant turn with `tool_calls` or a `tool` result, as the model takes it.

    OpenAI's tool results carry only the `tool_call_id`; a model whose message items take
    a `name` gets the function's name too, from the assistant call it answers (`called`:
    call id -> function name), as templates that print a tool result's name need it. A
    model whose schema has no `name` never gets one (Workers AI refuses keys it lacks).
    """
    if message["role"] == "tool":
        out = {"role": "tool", "content": message["content"]}
        if "tool_call_id" in message:
            out["tool_call_id"] = call_id_for(message["tool_call_id"], capabilities)
        name = message.get("name") or (called or {}).get(message.get("tool_call_id"))
        if name and ("name" in message or capabilities.message_name):
            out["name"] = name
        return out
    calls = [{"id": call_id_for(call["id"], capabilities), "type": "function",
              "function": {"name": call["function"]["name"],
                           "arguments": call["function"]["arguments"]}}
             for call in message["tool_calls"]]
    content = message["content"]
    if content == "" and capabilities.content_nullable:
        content = None
    return {"role": "assistant", "content": content, "tool_calls": calls}


def call_id_for(call_id, capabilities):
    """The id as the model's schema wants it; ids that miss its pattern get a stable stand-in
    (Mistral's schema asks for nine letters or digits), so a call and its result still pair."""
    pattern = capabilities.tool_call_id_pattern
    if not pattern:
        return call_id
    try:
        if re.search(pattern, call_id):
            return call_id
    except re.error:
        return call_id
    return hashlib.sha256(call_id.encode()).hexdigest()[:9]


def function_of(raw):
    """(name, arguments) of an upstream call in either shape; (None, None) for a blank one."""
    function = raw.get("function") if isinstance(raw.get("function"), dict) else {}
    name = raw.get("name") or function.get("name")
    arguments = raw["arguments"] if raw.get("arguments") is not None \
        else function.get("arguments")
    return (name if isinstance(name, str) and name else None), arguments


def arguments_text(arguments):
    """Arguments as OpenAI's JSON string: objects serialised, strings passed on as they are."""
    if arguments is None:
        return "{}"
    if isinstance(arguments, str):
        return arguments
    return jsonio.dumps(arguments).decode()


def read_calls(raw_calls):
    """OpenAI tool calls from an upstream `tool_calls` list (blank entries dropped)."""
    calls, seen = [], set()
    for raw in raw_calls if isinstance(raw_calls, list) else []:
        if not isinstance(raw, dict):
            continue
        name, arguments = function_of(raw)
        if name is None:
            continue
        calls.append({"id": unique_id(raw.get("id"), seen), "type": "function",
                      "function": {"name": name, "arguments": arguments_text(arguments)}})
    return calls


def unique_id(candidate, seen):
    """Cloudflare's id when it gave one not seen yet in this answer, else a new one."""
    call_id = candidate if isinstance(candidate, str) and candidate and candidate not in seen \
        else new_call_id()
    seen.add(call_id)
    return call_id


def salvage(text, tool_names, forced_name=None):
    """Tool calls from a forced call the model wrote as JSON text (a gpt-oss quirk), or None.

    Recognised: `{"name": <tool>, "arguments": {...}}` (or `parameters`), a list of those,
    and, when one tool was named, its bare arguments object.
    """
    candidate = text.strip()
    if candidate.startswith("```"):
        candidate = candidate.strip("`").removeprefix("json").strip()
    try:
        value = jsonio.loads(candidate)
    except ValueError:
        return None
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    raw = []
    for item in items:
        if item.get("name") in tool_names:
            raw.append({"name": item["name"],
                        "arguments": item.get("arguments", item.get("parameters", {}))})
        elif forced_name and len(items) == 1:
            raw.append({"name": forced_name, "arguments": item})
        else:
            return None
    return read_calls(raw)
