"""Chat chunks in, the Responses API's stream events out, on the chat stream's relay.

`ResponsesStream` wraps the chat `StreamTranslator`: the relay feeds it upstream
payloads exactly as for chat (heartbeats, idle timeout, client disconnects, total
duration all stay the relay's), the chat translator turns them into chat chunks, and
this class turns those into OpenAI's event sequence: `response.created`,
`response.in_progress`, then per output item `response.output_item.added`, its
content events (`response.content_part.added`, `response.output_text.delta`...,
`.done`; `response.function_call_arguments.delta`/`.done` for tool calls;
`response.reasoning_text.delta`/`.done` for reasoning), `response.output_item.done`,
and finally `response.completed` or `response.incomplete` with the whole response, or
`response.failed` when Workers AI failed mid-way. Every event has the next
`sequence_number`; there is no `[DONE]` line.
"""
from gateway import jsonio
from gateway.openai import responses_answer as answer


class ResponsesStream:
    """A stream translator for `/v1/responses`, built on the chat one (see module doc)."""

    closing = b""  # Responses streams end with their last event, no [DONE]

    def __init__(self, chat, shell, on_end=None):
        self.chat = chat
        self.shell = shell
        self.on_end = on_end  # called with the final response (to store it)
        self.sequence = 0
        self.output = []  # items so far, in output order
        self.current = None  # index of the item whose content is streaming
        self.calls = {}  # chat tool-call index -> output index
        self.finish_reason = None

    # The relay reads these from the chat translator's progress.
    done = property(lambda self: self.chat.done)
    upstream_finished = property(lambda self: self.chat.upstream_finished)
    tokens_seen = property(lambda self: self.chat.tokens_seen)
    usage = property(lambda self: self.chat.usage)

    @staticmethod
    def encode(event):
        """One SSE event, named by its type as OpenAI sends it."""
        return b"event: " + event["type"].encode() + b"\ndata: " + jsonio.dumps(event) + b"\n\n"

    def _event(self, kind, **fields):
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def start(self):
        self.chat.start()
        snapshot = {**self.shell, "output": []}
        return [self._event("response.created", response=snapshot),
                self._event("response.in_progress", response=snapshot)]

    def feed(self, payload):
        return self._convert(self.chat.feed(payload))

    def finish(self):
        return self._convert(self.chat.finish()) + self._end()

    def replay(self, reply):
        """Every event for a whole reply (Cloudflare sent JSON although a stream was asked)."""
        events = self.start()
        return events + self._convert(self.chat.replay(reply)) + self._end()

    def fail(self, error):
        """`response.failed` with the error, the output so far marked incomplete."""
        output = [{**item, "status": "incomplete"} if index == self.current else item
                  for index, item in enumerate(self.output)]
        return [self._event("response.failed",
                            response=answer.failed(self.shell, output, error))]

    # --- chat chunks to events ----------------------------------------------------------------

    def _convert(self, chunks):
        events = []
        for chunk in chunks:
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                if delta.get("reasoning_content"):
                    events += self._text("reasoning", delta["reasoning_content"])
                if delta.get("content"):
                    events += self._text("message", delta["content"])
                for call in delta.get("tool_calls") or ():
                    events += self._call(call)
                if choice.get("finish_reason"):
                    self.finish_reason = choice["finish_reason"]
        return events

    def _open(self, item):
        events = self._close()
        self.output.append(item)
        self.current = len(self.output) - 1
        events.append(self._event("response.output_item.added", output_index=self.current,
                                  item=_copy(item)))
        return events

    def _begin(self, kind):
        """Open a message or reasoning item and its one content part."""
        item = answer.message_item("", "in_progress") if kind == "message" else \
            answer.reasoning_item("", "in_progress")
        part = item["content"].pop()
        events = self._open(item)
        item["content"].append(part)
        events.append(self._event("response.content_part.added", item_id=item["id"],
                                  output_index=self.current, content_index=0, part=dict(part)))
        return events

    def _text(self, kind, text):
        events = []
        item = self.output[self.current] if self.current is not None else None
        if item is None or item["type"] != kind:
            events += self._begin(kind)
            item = self.output[self.current]
        item["content"][0]["text"] += text
        where = {"item_id": item["id"], "output_index": self.current, "content_index": 0}
        if kind == "message":
            events.append(self._event("response.output_text.delta", **where, delta=text,
                                      logprobs=[]))
        else:
            events.append(self._event("response.reasoning_text.delta", **where, delta=text))
        return events

    def _call(self, call):
        events = []
        function = call.get("function") or {}
        index = call.get("index", 0)
        if index not in self.calls:
            item = answer.function_call_item(call.get("id"), function.get("name") or "", "",
                                             "in_progress")
            events += self._open(item)
            self.calls[index] = self.current
        position = self.calls[index]
        item = self.output[position]
        if function.get("name") and not item["name"]:
            item["name"] = function["name"]
        fragment = function.get("arguments")
        if fragment:
            item["arguments"] += fragment
            if position == self.current:  # a late fragment of a closed call only joins the item
                events.append(self._event("response.function_call_arguments.delta",
                                          item_id=item["id"], output_index=position,
                                          delta=fragment))
        return events

    def _close(self):
        """The closing events of the item that is streaming, if any."""
        if self.current is None:
            return []
        index, self.current = self.current, None
        item = self.output[index]
        item["status"] = answer.item_status(self.finish_reason)
        where = {"item_id": item["id"], "output_index": index}
        events = []
        if item["type"] == "function_call":
            events.append(self._event("response.function_call_arguments.done", **where,
                                      name=item["name"], arguments=item["arguments"]))
        else:
            part = item["content"][0]
            kind = "output_text" if item["type"] == "message" else "reasoning_text"
            extra = {"logprobs": []} if kind == "output_text" else {}
            events.append(self._event(f"response.{kind}.done", **where, content_index=0,
                                      text=part["text"], **extra))
            events.append(self._event("response.content_part.done", **where, content_index=0,
                                      part=dict(part)))
        events.append(self._event("response.output_item.done", output_index=index,
                                  item=_copy(item)))
        return events

    def _end(self):
        events = self._close()
        if not any(item["type"] in ("message", "function_call") for item in self.output):
            events += self._begin("message") + self._close()  # an empty answer
        final = answer.finished(self.shell, self.output, self.finish_reason, self.chat.usage)
        if self.on_end is not None:
            self.on_end(final)
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        return events + [self._event(kind, response=final)]



def _copy(item):
    """The item as it is now: events are encoded after later chunks changed it."""
    if "content" in item:
        return {**item, "content": [dict(part) for part in item["content"]]}
    return dict(item)
