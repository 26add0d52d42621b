"""Answers to requests that used OpenAI's legacy `functions` and `function_call`.

schemas.py serves such a request as tools, but its client reads the legacy answer:
`message.function_call` (`{name, arguments}`) and `finish_reason: "function_call"`, and
in a stream `delta.function_call` (the name in the first delta, argument text after);
LangChain's function parsers and older SDK code look nowhere else
(https://platform.openai.com/docs/api-reference/chat/object). The legacy API has one
call per answer, so `function_call` is the first tool call; `tool_calls` stay beside it
for clients that read those.
"""


def legacy_completion(body):
    """A `chat.completion` with its first tool call as `function_call`."""
    for choice in body["choices"]:
        message = choice["message"]
        calls = message.get("tool_calls")
        if calls:
            message["function_call"] = dict(calls[0]["function"])
            choice["finish_reason"] = "function_call"
    return body


def legacy_chunk(chunk):
    """A `chat.completion.chunk` with the first call's deltas as `delta.function_call`."""
    for choice in chunk["choices"]:
        calls = choice["delta"].get("tool_calls")
        first = [call["function"] for call in calls or () if call["index"] == 0]
        if first:
            choice["delta"]["function_call"] = {
                key: first[0][key] for key in ("name", "arguments") if key in first[0]}
        if choice["finish_reason"] == "tool_calls":
            choice["finish_reason"] = "function_call"
    return chunk


class LegacyFunctionStream:
    """A chat stream translator whose chunks speak the legacy form (see module doc)."""

    def __init__(self, chat):
        self.chat = chat
        self.closing, self.encode, self.fail = chat.closing, chat.encode, chat.fail

    # The relay reads these from the chat translator's progress.
    done = property(lambda self: self.chat.done)
    upstream_finished = property(lambda self: self.chat.upstream_finished)
    tokens_seen = property(lambda self: self.chat.tokens_seen)
    usage = property(lambda self: self.chat.usage)

    def start(self):
        return [legacy_chunk(chunk) for chunk in self.chat.start()]

    def feed(self, payload):
        return [legacy_chunk(chunk) for chunk in self.chat.feed(payload)]

    def finish(self):
        return [legacy_chunk(chunk) for chunk in self.chat.finish()]

    def replay(self, reply):
        return [legacy_chunk(chunk) for chunk in self.chat.replay(reply)]
