"""Pure translation between OpenAI's API and Workers AI's `/ai/run`: dicts in, dicts out.

Workers AI answers in three shapes, and all of them are read here:
`result.response` (classic models), `result.choices[...]` (newer, OpenAI-shaped
models) and `response_text`. Nothing here knows about Flask or HTTP.
"""
import secrets
import time
from dataclasses import dataclass, field

from gateway import jsonio
from gateway.openai import tools

# Sampling parameters forwarded to Workers AI under the same name.
SAMPLING_PARAMS = ("temperature", "top_p", "top_k", "seed", "repetition_penalty",
                   "frequency_penalty", "presence_penalty")


class UnreadableReply(ValueError):
    """Cloudflare answered 200 with a body the gateway cannot turn into an answer."""


@dataclass
class Reply:
    """What a non-stream Workers AI answer boils down to (its first choice; `more` holds the
    others when the model was asked for `n` > 1)."""

    text: str
    usage: dict | None
    finish_reason: str | None = None
    tool_calls: list = field(default_factory=list)
    reasoning: str | None = None
    logprobs: dict | None = None
    more: list = field(default_factory=list)


def new_id(prefix):
    """An OpenAI-style object id such as `chatcmpl-...`."""
    return f"{prefix}-{secrets.token_hex(12)}"


def max_tokens_of(request, default):
    """The client's token limit (`max_completion_tokens` wins over `max_tokens`)."""
    return request.get("max_completion_tokens") or request.get("max_tokens") or default


def _sampling(request, default_max_tokens):
    payload = {"max_tokens": max_tokens_of(request, default_max_tokens)}
    for name in SAMPLING_PARAMS:
        if name in request:
            payload[name] = request[name]
    if request.get("stream"):
        payload["stream"] = True
    return payload


def chat_payload(request, default_max_tokens):
    """Workers AI input for a validated chat request; `developer` becomes `system`."""
    messages = [{"role": "system" if m["role"] == "developer" else m["role"],
                 "content": m["content"]} for m in request["messages"]]
    return {"messages": messages, **_sampling(request, default_max_tokens)}


def completion_payload(request, default_max_tokens):
    """Workers AI input for a validated text-completion request."""
    return {"prompt": request["prompt"], **_sampling(request, default_max_tokens)}


def input_chars(request):
    """Characters of the prompt, or of all message texts together (images not counted)."""
    if "prompt" in request:
        return len(request["prompt"])
    return sum(len(m["content"]) if isinstance(m["content"], str) else
               sum(len(p["text"]) for p in m["content"] if p["type"] == "text")
               for m in request["messages"])


def as_text(value):
    """Content as a string: Cloudflare sometimes sends numbers, JSON mode answers an object
    or an array (sent on as its JSON text), and null means nothing."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, (dict, list)):
        return jsonio.dumps(value).decode()
    raise UnreadableReply("content is not text")


def reasoning_of(holder):
    """The reasoning text a message or delta carries (`reasoning_content` or `reasoning`)."""
    if not isinstance(holder, dict):
        return None
    value = holder.get("reasoning_content")
    if value is None:
        value = holder.get("reasoning")
    return value if isinstance(value, str) and value else None


def normalise_usage(usage):
    """OpenAI's usage object from Cloudflare's (extra fields such as `neurons` dropped)."""
    if not isinstance(usage, dict) or not ({"prompt_tokens", "completion_tokens"} & usage.keys()):
        return None
    try:
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        total = int(usage.get("total_tokens") or prompt + completion)
    except (TypeError, ValueError):
        return None
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def read_reply(body):
    """A `Reply` from a Workers AI JSON body, in whichever of its shapes it comes."""
    if not isinstance(body, dict):
        raise UnreadableReply("body is not an object")
    result = body.get("result", body)
    if not isinstance(result, dict):
        raise UnreadableReply("result is not an object")
    usage = normalise_usage(result.get("usage"))
    if "choices" in result:
        choices = result["choices"]
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise UnreadableReply("choices is empty")
        replies = [_choice_reply(c, usage) for c in choices if isinstance(c, dict)]
        replies[0].more = replies[1:]
        return replies[0]
    for key in ("response", "response_text"):
        if key in result:
            return Reply(as_text(result[key]), usage,
                         tool_calls=tools.read_calls(result.get("tool_calls")))
    raise UnreadableReply("no response in result")


def _choice_reply(choice, usage):
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    text = message.get("content")
    if text is None:
        text = choice.get("text")
    logprobs = choice.get("logprobs")
    return Reply(as_text(text), usage, choice.get("finish_reason"),
                 tool_calls=tools.read_calls(message.get("tool_calls")),
                 reasoning=reasoning_of(message),
                 logprobs=_logprobs(logprobs))


def _logprobs(logprobs):
    """OpenAI's choice `logprobs` object; OpenAI-shaped models on Workers AI (vLLM) leave out
    `refusal`, which OpenAI's schema requires beside `content`."""
    if not isinstance(logprobs, dict):
        return None
    return {"content": None, "refusal": None, **logprobs}


def finish_reason(usage, max_tokens, upstream_reason=None, tokens_seen=0):
    """`length` when the completion reached max_tokens, else `stop`."""
    if usage is not None:
        completion = usage["completion_tokens"]
    else:
        completion = tokens_seen
    if completion >= max_tokens or upstream_reason == "length":
        return "length"
    return "stop"


def reply_finish(reply, max_tokens):
    """A choice's finish_reason: `tool_calls` when it called tools, else stop or length."""
    if reply.tool_calls:
        return "tool_calls"
    return finish_reason(reply.usage, max_tokens, reply.finish_reason)


def _completion(kind, prefix, content_of, reply, model, max_tokens, completion_id, created):
    """A non-stream completion object with one choice per reply (`content_of(reply)`)."""
    choices = [{"index": index, **content_of(one), "logprobs": one.logprobs,
                "finish_reason": reply_finish(one, max_tokens)}
               for index, one in enumerate([reply, *reply.more])]
    body = {"id": completion_id or new_id(prefix), "object": kind,
            "created": created or now(), "model": model, "choices": choices}
    if reply.usage is not None:
        body["usage"] = reply.usage
    return body


def chat_message(reply):
    """The assistant message of one choice: content null when it only called tools."""
    content = reply.text if reply.text or not reply.tool_calls else None
    message = {"role": "assistant", "content": content, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = reply.tool_calls
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning
    return {"message": message}


def chat_completion(reply, *, model, max_tokens, completion_id=None, created=None):
    """The `chat.completion` object for a reply."""
    return _completion("chat.completion", "chatcmpl", chat_message, reply, model,
                       max_tokens, completion_id, created)


def text_completion(reply, *, model, max_tokens, completion_id=None, created=None):
    """The `text_completion` object for a reply."""
    return _completion("text_completion", "cmpl", lambda one: {"text": one.text}, reply, model,
                       max_tokens, completion_id, created)


def now():
    """Current Unix time in whole seconds (OpenAI's `created`)."""
    return int(time.time())
