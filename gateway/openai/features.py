"""Chat features beyond plain text, decided per request from the model's own capabilities.

A plain text request never gets here (`needs_schema` is False) and goes upstream as it
always did. Anything else (tools, JSON mode, stop, images, reasoning effort, `n`,
`logprobs`, tool history) is checked against what the model's schema says it accepts
(gateway/cloudflare/capabilities.py), refused with a 400 naming the parameter when it
cannot be served, and otherwise written into the payload in the model's own form. The
`Plan` says what the answer side must do: cut emulated stop sequences, salvage a forced
tool call written as text, or ask without `stream` and replay the answer as a stream.
"""
from dataclasses import dataclass

from gateway.errors import InvalidRequestError
from gateway.openai import formats, stop, tools, vision

FEATURE_KEYS = ("tools", "tool_choice", "response_format", "stop", "reasoning_effort", "n",
                "logprobs", "top_logprobs")


@dataclass(frozen=True)
class Plan:
    """What the answer side does for this request."""

    stops: tuple = ()  # emulated stop sequences: the gateway cuts the output
    tool_names: tuple = ()
    forced_tool: str | None = None  # the named tool of a forced call
    forced: bool = False  # tool_choice "required" or a named function
    replay: bool = False  # asked upstream without stream; the answer is replayed as SSE


PLAIN = Plan()


def needs_schema(data):
    """Whether the request asks for anything the model's schema must allow."""
    if any(key in data for key in FEATURE_KEYS):
        return True
    return any(m["role"] == "tool" or "tool_calls" in m or not isinstance(m["content"], str)
               for m in data.get("messages", ()))


def not_supported(model, param, capabilities, what, feature=None):
    """The 400 for a parameter this model cannot take, saying why."""
    if not capabilities.known:
        reason = (f"the gateway could not read the Workers AI schema of '{model}', so it "
                  f"cannot tell whether the model supports {feature or repr(param)}; "
                  "try again later")
    else:
        reason = f"the model '{model}' does not support {what} (its Workers AI schema says so)"
    return InvalidRequestError(f"Invalid '{param}': {reason}.", param=param,
                               code="model_not_supported")


def apply(data, payload, capabilities, model, inline_images=None):
    """(payload with the features in the model's form, Plan); a 400 for what cannot be served.

    `inline_images(messages)` turns image URLs into data URLs; it runs only once every
    check passed, so nothing is fetched for a request that is refused anyway.
    """
    payload = dict(payload)
    plan = {}
    if "messages" in data:
        _tools(data, payload, capabilities, model, plan)
        _response_format(data, payload, capabilities, model, plan)
        _reasoning(data, payload, capabilities, model)
        _choices(data, payload, capabilities, model, plan)
    if "stop" in data:
        if capabilities.stop:
            payload["stop"] = data["stop"]
        else:
            plan["stops"] = tuple(data["stop"])
    if capabilities.known and not capabilities.streaming:
        plan["replay"] = True
    if "messages" in data:
        messages = _history(data["messages"], capabilities)
        images = vision.image_parts(messages)
        if images and capabilities.vision is None:
            raise not_supported(model, images[0][0], capabilities, "images (vision)", "images")
        if images:
            messages = inline_images(messages) if inline_images else messages
            messages, extra = vision.upstream_images(messages, capabilities)
            payload.update(extra)
        payload["messages"] = messages
    if plan.get("replay") or not data.get("stream"):
        payload.pop("stream", None)
        plan["replay"] = bool(data.get("stream"))
    return payload, Plan(**plan)


def _tools(data, payload, capabilities, model, plan):
    if "tools" not in data:
        return
    choice = data.get("tool_choice", "auto")
    if choice == "none":
        return
    if not capabilities.tools:
        param = "functions" if data.get("legacy_functions") else "tools"
        raise not_supported(model, param, capabilities, "tools (function calling)")
    sent, forward = tools.upstream_tools(data["tools"], choice, capabilities)
    payload["tools"] = sent
    if forward is not None:
        payload["tool_choice"] = forward
    if "parallel_tool_calls" in data and capabilities.parallel_tool_calls:
        payload["parallel_tool_calls"] = data["parallel_tool_calls"]
    plan["tool_names"] = tuple(t["function"]["name"] for t in data["tools"])
    plan["forced"] = choice == "required" or isinstance(choice, dict)
    plan["forced_tool"] = choice["name"] if isinstance(choice, dict) else None
    if plan["forced"]:
        plan["replay"] = True  # a forced call may come back as text: read it whole


def _response_format(data, payload, capabilities, model, plan):
    if "response_format" not in data:
        return
    if capabilities.json_form is None:
        raise not_supported(model, "response_format", capabilities,
                            "JSON mode (response_format)")
    payload.update(formats.upstream_format(data["response_format"], capabilities))
    if capabilities.json_form != "wrapper":
        plan["replay"] = True  # "JSON Mode currently doesn't support streaming" (Cloudflare)


def _reasoning(data, payload, capabilities, model):
    if "reasoning_effort" not in data:
        return
    effort = data["reasoning_effort"]
    if not capabilities.reasoning_effort:
        raise not_supported(model, "reasoning_effort", capabilities, "reasoning_effort")
    if capabilities.reasoning_efforts and effort not in capabilities.reasoning_efforts:
        allowed = ", ".join(capabilities.reasoning_efforts)
        raise InvalidRequestError(f"Invalid 'reasoning_effort': '{model}' takes {allowed}.",
                                  param="reasoning_effort", code="model_not_supported")
    payload["reasoning_effort"] = effort


def _choices(data, payload, capabilities, model, plan):
    for name in ("n", "logprobs", "top_logprobs"):
        if name in data:
            if not getattr(capabilities, name):
                raise not_supported(model, name, capabilities, f"'{name}'")
            payload[name] = data[name]
            plan["replay"] = True  # several choices and logprobs are read whole


def _history(messages, capabilities):
    """Messages as the model takes them: tool history kept, `developer` sent as `system`."""
    out = []
    called = {}  # tool call id -> function name, for the results that follow
    for message in messages:
        for call in message.get("tool_calls") or ():
            called[call["id"]] = call["function"]["name"]
        if message["role"] == "tool" or "tool_calls" in message:
            out.append(tools.history_message(message, capabilities, called))
            continue
        role = "system" if message["role"] == "developer" else message["role"]
        out.append({"role": role, "content": message["content"]})
    return out


def finish_reply(reply, plan):
    """The answer side of the plan on a whole reply: cut stop sequences, salvage a forced call."""
    for one in [reply, *reply.more]:
        if plan.stops:
            one.text, found = stop.cut(one.text, plan.stops)
            if found:
                one.finish_reason = "stop"
        if plan.forced and not one.tool_calls and one.text:
            calls = tools.salvage(one.text, plan.tool_names, plan.forced_tool)
            if calls:
                one.tool_calls, one.text = calls, ""
    return reply
