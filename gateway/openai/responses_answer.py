"""The `response` object: built from a chat completion, or item by item from a stream.

Both ways share these builders, so a streamed answer ends as exactly the object the
same answer would have been without a stream. `output_text` is left out: it is the
SDKs' convenience, computed from `output`.
"""
import time

from gateway.openai.responses import TEXT_FORMAT, new_id, output_text

# Chat finish reasons that leave a response incomplete, and the reason OpenAI gives.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _tool(tool):
    return {"type": "function", "name": tool["name"], "description": tool.get("description"),
            "parameters": tool.get("parameters"), "strict": tool.get("strict")}


def shell(request, chat, response_id, created_at):
    """The response before any output: the request's settings echoed, status `in_progress`.

    `chat` is the validated chat request, whose temperature is the one actually used.
    """
    text = (request.get("text") or {}).get("format", TEXT_FORMAT)
    reasoning = request.get("reasoning") or {}
    body = {
        "id": response_id, "object": "response", "created_at": created_at,
        "status": "in_progress", "background": False, "completed_at": None, "error": None,
        "incomplete_details": None, "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "metadata": request.get("metadata", {}), "model": request["model"], "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "service_tier": "default", "store": request["store"],
        "temperature": chat.get("temperature"),
        "text": {"format": text, "verbosity": "medium"},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": [_tool(tool) for tool in request.get("tools", [])],
        "top_p": request.get("top_p"), "truncation": request.get("truncation", "disabled"),
    }
    if "user" in request:
        body["user"] = request["user"]
    return body


def message_item(text, status="completed", item_id=None, refusal=None):
    """An assistant `message` output item holding `text`."""
    content = [output_text(text)] if text or not refusal else []
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": item_id or new_id("msg"), "type": "message", "status": status,
            "role": "assistant", "content": content}


def function_call_item(call_id, name, arguments, status="completed", item_id=None):
    """A `function_call` output item."""
    return {"id": item_id or new_id("fc"), "type": "function_call", "status": status,
            "call_id": call_id or new_id("call"), "name": name, "arguments": arguments}


def reasoning_item(text, status="completed", item_id=None):
    """A `reasoning` output item carrying the model's reasoning text."""
    return {"id": item_id or new_id("rs"), "type": "reasoning", "status": status,
            "summary": [], "content": [{"type": "reasoning_text", "text": text}]}


def usage_of(usage):
    """Responses usage from chat usage (None when Cloudflare reported none)."""
    if not usage:
        return None
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return {"input_tokens": usage["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": usage["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": usage["total_tokens"]}


def finished(shell_body, output, finish_reason, usage):
    """The final response: `completed`, or `incomplete` with OpenAI's reason."""
    body = {**shell_body, "output": output}
    reason = INCOMPLETE.get(finish_reason)
    if reason:
        body["status"], body["incomplete_details"] = "incomplete", {"reason": reason}
    else:
        body["status"], body["completed_at"] = "completed", int(time.time())
    responses_usage = usage_of(usage)
    if responses_usage is not None:
        body["usage"] = responses_usage
    return body


def failed(shell_body, output, error):
    """The response a stream ends with when Workers AI failed mid-way."""
    code = "rate_limit_exceeded" if error.status == 429 else "server_error"
    return {**shell_body, "status": "failed", "output": output,
            "error": {"code": code, "message": error.message}}


def item_status(finish_reason):
    return "incomplete" if finish_reason in INCOMPLETE else "completed"


def from_chat(completion, shell_body):
    """The response for a non-stream chat completion."""
    choice = completion["choices"][0]
    message, finish_reason = choice["message"], choice.get("finish_reason")
    status = item_status(finish_reason)
    output = []
    if message.get("reasoning_content"):
        output.append(reasoning_item(message["reasoning_content"]))
    calls = message.get("tool_calls") or []
    if message.get("content") or message.get("refusal") or not calls:
        output.append(message_item(message.get("content") or "", status,
                                   refusal=message.get("refusal")))
    for call in calls:
        function = call["function"]
        output.append(function_call_item(call.get("id"), function["name"],
                                         function.get("arguments") or "", status))
    return finished(shell_body, output, finish_reason, completion.get("usage"))
