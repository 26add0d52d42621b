"""How the fake Workers AI answers requests that use a model family's features.

A request with tools, tool history, JSON mode, native ``stop``, images, ``n``, ``logprobs``,
``reasoning_effort`` or the ``[[think]]`` directive is first validated against the model's
own input schema (``tests/fake_model_families.py``; unknown top-level keys are refused
like ``flux-1-schnell`` does, so nothing the model cannot take slips through), then
answered in the family's shape:

* tools with a user turn last: a call of the named tool (``tool_choice``) or the first one,
  arguments made from its parameter schema (``[[calls=N]]``: N calls); classic models send
  ``[{name, arguments: <object>}]`` (llama-4-scout: ``{id, type, function}``), OpenAI-shaped
  ones OpenAI's calls; in streams classic calls ride in one event's ``tool_calls`` array,
  OpenAI-shaped ones arrive as deltas split at every byte of the arguments, the hybrid adds
  a blank "finalisation" entry; ``[[quirk=text_call]]`` answers a forced call as JSON text;
* a ``tool`` turn last: ``"Result: <its content>"``;
* JSON mode: an object made from the schema (``{"echo": <text>}`` without one); classic
  models answer it as an object in ``response`` and refuse it with ``stream``;
  ``[[json_fail]]``: the "JSON Mode couldn't be met" error;
* text: ``"Echo: <text>"`` plus ``" [images: N]"``, cut at a native ``stop``;
* reasoning (OpenAI-shaped output, with ``reasoning_effort`` or ``[[think]]``):
  ``reasoning_content`` ``"Thinking about: <text>"``.
"""
import json
import re
import uuid

from jsonschema import Draft202012Validator

from tests.fake_model_families import OPENAI_OUTPUT_FAMILIES, family_of, schema_of

FEATURE_KEYS = {"tools", "tool_choice", "response_format", "guided_json", "image", "stop", "n",
                "logprobs", "top_logprobs", "reasoning_effort", "parallel_tool_calls"}
_CALLS = re.compile(r"\[\[calls=(\d+)\]\]")


class Refusal(Exception):
    """An error Workers AI would answer (status, code, message)."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def wanted(payload):
    """Whether a /ai/run body uses a family feature (else the fake's plain path answers)."""
    if not isinstance(payload, dict):
        return False
    if FEATURE_KEYS & payload.keys():
        return True
    for message in payload.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if message.get("role") == "tool" or message.get("tool_calls"):
            return True
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "image_url"
                                             for p in content):
            return True
        if isinstance(content, str) and "[[think]]" in content:
            return True
    return False


def _text(content):
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content
                        if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _bad(message):
    return Refusal(400, 5006, "AiError: Bad input: " + message)


def validate(payload, schema):
    """Refuse what the model's input schema refuses (and any key it does not know)."""
    known = set()
    for branch in schema.get("oneOf", [schema]):
        known |= set(branch.get("properties", {}))
    extra = [k for k in payload if k not in known]
    if extra:
        listed = ", ".join("/" + k for k in extra)
        raise _bad(f"Additional or unevaluated properties '{listed}' at '/' not allowed")
    errors = sorted(Draft202012Validator(schema).iter_errors(payload), key=lambda e: e.path)
    if errors:
        where = "/" + "/".join(str(p) for p in errors[0].absolute_path)
        raise _bad(f"Error: oneOf at '/' not met: {errors[0].message[:200]} at '{where}'")


def example(schema, name="value", root=None, depth=0):
    """A value that satisfies a (simple) JSON schema."""
    root = root or schema
    if not isinstance(schema, dict) or depth > 8:
        return None
    if "$ref" in schema and schema["$ref"].startswith("#/"):
        target = root
        for part in schema["$ref"][2:].split("/"):
            target = target.get(part, {})
        return example(target, name, root, depth + 1)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return example(options[0], name, root, depth + 1)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        return {key: example(sub, key, root, depth + 1)
                for key, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [example(schema.get("items", {}), name, root, depth + 1)]
    return {"integer": 42, "number": 1.5, "boolean": True,
            "null": None}.get(kind, "London" if name in ("city", "location") else f"{name}-1")


def answer(model, payload, stream, openai_shaped):
    """(non-stream body dict, or stream event payload strings) for a feature request."""
    family = family_of(model, openai_shaped)
    validate(payload, schema_of(model, openai_shaped)["input"])
    openai_out = family in OPENAI_OUTPUT_FAMILIES
    messages = payload.get("messages") or [{"role": "user", "content": payload.get("prompt")}]
    last = messages[-1]
    users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
    text = users[-1] if users else ""
    json_mode = "response_format" in payload or "guided_json" in payload
    if "[[json_fail]]" in text and json_mode:
        raise Refusal(400, 5006, "AiError: JSON Mode couldn't be met")
    if json_mode and stream and not openai_out:
        raise _bad("JSON Mode currently doesn't support streaming")
    reply = {"text": "", "calls": [], "value": None, "reasoning": None, "finish": "stop"}
    if openai_out and ("reasoning_effort" in payload or "[[think]]" in text):
        reply["reasoning"] = "Thinking about: " + text.replace("[[think]]", "").strip()
    tools = payload.get("tools") or []
    if tools and last.get("role") == "user":
        reply["calls"] = _calls(tools, payload.get("tool_choice"), text)
        reply["finish"] = "tool_calls"
        if "[[quirk=text_call]]" in text and openai_out:
            call = reply["calls"][0]
            reply["text"], reply["calls"], reply["finish"] = json.dumps(call), [], "stop"
    elif json_mode:
        reply["value"] = _json_value(payload, text)
        reply["text"] = json.dumps(reply["value"])
    elif last.get("role") == "tool":
        reply["text"] = "Result: " + _text(last.get("content"))
    else:
        images = _images(payload)
        reply["text"] = "Echo: " + re.sub(r"\s*\[\[[^\]]*\]\]", "", text).strip() + (
            f" [images: {images}]" if images else "")
        stops = payload.get("stop")
        for stop in [stops] if isinstance(stops, str) else stops or []:
            if stop in reply["text"]:
                reply["text"] = reply["text"][:reply["text"].index(stop)]
    prompt_tokens = sum(len(_text(m.get("content")).split()) for m in messages) + 3
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": max(len(reply["text"].split()), 1),
             "total_tokens": prompt_tokens + max(len(reply["text"].split()), 1)}
    if stream:
        render = _openai_events if openai_out else _classic_events
        return render(model, family, reply, usage)
    if openai_out:
        return {"result": _completion(model, family, reply, usage, payload.get("n") or 1,
                                      payload.get("logprobs")),
                "success": True, "errors": [], "messages": []}
    response = reply["value"] if reply["value"] is not None else reply["text"]
    return {"result": {"response": response, "tool_calls": [
        _classic_call(call, family) for call in reply["calls"]], "usage": usage},
        "success": True, "errors": [], "messages": []}


def _calls(tools, tool_choice, text):
    def function(tool):
        return tool.get("function", tool)
    named = tool_choice.get("function", {}).get("name") if isinstance(tool_choice, dict) else None
    chosen = [t for t in tools if function(t)["name"] == named] or tools
    count = int(_CALLS.search(text).group(1)) if _CALLS.search(text) else 1
    calls = []
    for i in range(count):
        fn = function(chosen[i % len(chosen)])
        calls.append({"name": fn["name"], "arguments": example(fn.get("parameters") or {})})
    return calls


def _json_value(payload, text):
    if "guided_json" in payload:
        schema = payload["guided_json"]
    else:
        fmt = payload["response_format"]
        schema = fmt.get("json_schema")
        if isinstance(schema, dict) and "schema" in schema and "name" in schema:
            schema = schema["schema"]
    if not isinstance(schema, dict) or not schema.get("properties"):
        return {"echo": text}
    return example(schema)


def _images(payload):
    if "image" in payload:
        return 1
    return sum(1 for m in payload.get("messages") or [] if isinstance(m.get("content"), list)
               for p in m["content"] if isinstance(p, dict) and p.get("type") == "image_url")


def _classic_call(call, family):
    if family == "classic_scout":
        return {"id": "chatcmpl-tool-" + uuid.uuid4().hex[:12], "type": "function",
                "function": {"name": call["name"], "arguments": call["arguments"]}}
    return {"name": call["name"], "arguments": call["arguments"]}


def _openai_call(call, index):
    return {"id": f"chatcmpl-tool-{uuid.uuid4().hex[:16]}", "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}


def _completion(model, family, reply, usage, n, logprobs):
    message = {"role": "assistant", "content": reply["text"] if not reply["calls"] else None,
               "reasoning_content": reply["reasoning"]}
    if reply["calls"]:
        message["tool_calls"] = [_openai_call(c, i) for i, c in enumerate(reply["calls"])]
    probs = {"content": [{"token": t, "logprob": -0.25, "bytes": list(t.encode()),
                          "top_logprobs": []} for t in reply["text"].split()]} if logprobs \
        else None
    return {"id": uuid.uuid4().hex, "object": "chat.completion", "created": 1_790_000_000,
            "model": model + "-external",
            "choices": [{"index": i, "message": message, "finish_reason": reply["finish"],
                         "logprobs": probs} for i in range(n)],
            "usage": {**usage, "prompt_tokens_details": {"cached_tokens": 0}}}


def _words(text):
    return re.findall(r"\s*\S+", text)


def _classic_events(model, family, reply, usage):
    events = [json.dumps({"response": "", "tool_calls": []})]
    events += [json.dumps({"response": w, "tool_calls": []}) for w in _words(reply["text"])]
    if reply["calls"]:
        events.append(json.dumps({"response": "", "tool_calls": [
            _classic_call(call, family) for call in reply["calls"]]}))
    events += [json.dumps({"response": "", "usage": usage}), "[DONE]"]
    return events


def _openai_events(model, family, reply, usage):
    base = {"id": uuid.uuid4().hex, "object": "chat.completion.chunk", "created": 1_790_000_000,
            "model": model + "-external"}

    def chunk(delta, finish=None):
        return json.dumps({**base, "choices": [{"index": 0, "delta": delta,
                                                "finish_reason": finish, "logprobs": None}]})

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"reasoning_content": w}) for w in _words(reply["reasoning"] or "")]
    events += [chunk({"content": w}) for w in _words(reply["text"])]
    for index, call in enumerate(reply["calls"]):
        whole = _openai_call(call, index)
        events.append(chunk({"tool_calls": [{"index": index, "id": whole["id"],
                                             "type": "function", "function": {
                                                 "name": call["name"], "arguments": ""}}]}))
        events += [chunk({"tool_calls": [{"index": index, "function": {"arguments": ch}}]})
                   for ch in whole["function"]["arguments"]]
        if family == "hybrid":
            events.append(chunk({"tool_calls": [{"index": index, "id": None, "type": None,
                                                 "function": {"name": None,
                                                              "arguments": None}}]}))
    events.append(chunk({}, reply["finish"]))
    events += [json.dumps({"response": "", "usage": usage}), "[DONE]"]
    return events
