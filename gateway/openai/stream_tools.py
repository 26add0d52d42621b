"""Tool calls inside a Workers AI stream, merged into OpenAI's `delta.tool_calls`.

Upstream pieces come in several shapes: classic events with a whole `tool_calls` array
(`{name, arguments: <object>}`, no ids), OpenAI-shaped deltas whose id, name and argument
text may be split over any number of events, and blank "finalisation" entries some
models send at the end. The client gets OpenAI's form: the first delta of each call
carries its index, id, type and name (and any argument text already known), later
deltas only argument fragments.
"""
from gateway.openai import tools


class _Call:
    __slots__ = ("id", "name", "arguments", "sent", "index")

    def __init__(self):
        self.id = self.name = self.index = None
        self.arguments = ""
        self.sent = 0  # characters of `arguments` the client has


class ToolCallMerger:
    """Feed upstream `tool_calls` lists; get the OpenAI delta entries to send."""

    def __init__(self):
        self._calls = {}
        self._seen_ids = set()
        self.started = 0  # calls the client has been told about

    def feed(self, raw_calls):
        out = []
        for raw in raw_calls:
            if not isinstance(raw, dict):
                continue
            index = raw.get("index")
            key = index if isinstance(index, int) and not isinstance(index, bool) \
                else f"whole-{len(self._calls)}"
            call = self._calls.setdefault(key, _Call())
            name, arguments = tools.function_of(raw)
            if call.id is None and isinstance(raw.get("id"), str) and raw["id"]:
                call.id = raw["id"]
            if call.name is None and name:
                call.name = name
            if isinstance(arguments, str):
                call.arguments += arguments
            elif arguments is not None and not call.arguments:
                call.arguments = tools.arguments_text(arguments)
            delta = self._delta(call)
            if delta is not None:
                out.append(delta)
        return out

    def _delta(self, call):
        if call.index is None:
            if call.name is None:
                return None  # nothing to show before the name is known
            call.index, self.started = self.started, self.started + 1
            call.id = tools.unique_id(call.id, self._seen_ids)
            call.sent = len(call.arguments)
            return {"index": call.index, "id": call.id, "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments}}
        if len(call.arguments) > call.sent:
            fragment, call.sent = call.arguments[call.sent:], len(call.arguments)
            return {"index": call.index, "function": {"arguments": fragment}}
        return None


def replay_deltas(calls):
    """The delta entries for whole tool calls (a reply replayed as a stream)."""
    return [{"index": index, **call} for index, call in enumerate(calls)]
