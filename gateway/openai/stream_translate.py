"""Pure stream translation: Workers AI `data:` payloads in, OpenAI chunk dicts out.

Both upstream stream shapes are read: classic `{"response": ...}` events and the
OpenAI-shaped `chat.completion.chunk` events of newer models, followed by
Cloudflare's closing `{"response": "", "usage": ...}` event. Whatever the upstream
repeats (finish frames, `[DONE]`) or pads (`p`), the client sees one role chunk,
content chunks with string content (reasoning in `delta.reasoning_content`, tool calls
in `delta.tool_calls`), one final chunk and, when asked, one usage chunk. Stop
sequences the model cannot take are cut here, and the upstream is then let go at once.
"""
from gateway import jsonio
from gateway.openai import translate
from gateway.openai.sse import DONE, encode
from gateway.cloudflare.error_map import map_error
from gateway.errors import UpstreamError, error_body
from gateway.openai.stop import StopScanner
from gateway.openai.stream_tools import ToolCallMerger, replay_deltas


class StreamFault(Exception):
    """The upstream stream failed after the client got its first byte."""

    def __init__(self, error):
        super().__init__(error.message)
        self.error = error


def malformed_event():
    return StreamFault(UpstreamError("Workers AI sent a malformed stream event."))


class StreamTranslator:
    """Turns Workers AI stream payloads into `chat.completion.chunk` or `text_completion` chunks.

    The relay asks the translator how its events are framed (`encode`), what ends the
    stream (`closing`) and what a failure looks like (`fail`), so another API's events
    (the Responses API's, `gateway.openai.responses_stream`) ride on the same relay.
    """

    closing = DONE
    encode = staticmethod(encode)

    def __init__(self, kind, *, model, max_tokens, include_usage, completion_id=None, created=None,
                 stops=()):
        self.chat = kind == "chat"
        self.scanner = StopScanner(stops) if stops else None
        self.cut_short = False  # a stop sequence ended the stream before the upstream did
        self.calls = ToolCallMerger()
        self._extra = None  # reasoning and tool call deltas of the event being read
        self.model = model
        self.max_tokens = max_tokens
        self.include_usage = include_usage
        self.id = completion_id or translate.new_id("chatcmpl" if self.chat else "cmpl")
        self.created = created or translate.now()
        self.done = False
        self.tokens_seen = 0
        self.upstream_finish = None
        self.final_usage = None  # Cloudflare's closing {"response": "", "usage": ...}: cumulative
        self.chunk_usage = None  # usage riding on OpenAI-shaped chunks: last one wins

    @property
    def upstream_finished(self):
        """Whether the upstream said it was done (its connection may then be reused)."""
        return self.done and not self.cut_short

    def _chunk(self, text=None, finish_reason=None, role=False, delta=None, index=0,
               logprobs=None):
        if self.chat:
            if delta is None:
                delta = {} if text is None else {"content": text}
            if role:
                delta = {"role": "assistant", "content": ""}
            choice = {"index": index, "delta": delta, "finish_reason": finish_reason,
                      "logprobs": logprobs}
            kind = "chat.completion.chunk"
        else:
            choice = {"index": index, "text": text or "", "finish_reason": finish_reason,
                      "logprobs": None}
            kind = "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "choices": [choice]}

    def start(self):
        """Chunks to send before any upstream event: the assistant role for chat."""
        return [self._chunk(role=True)] if self.chat else []

    def feed(self, payload):
        """Chunks for one upstream `data:` payload (bytes)."""
        if self.done:
            return []
        if payload.strip() == b"[DONE]":
            self.done = True
            return []
        try:
            event = jsonio.loads(payload)
        except ValueError:
            raise malformed_event() from None
        if not isinstance(event, dict):
            raise malformed_event()
        if event.get("error") or event.get("success") is False:
            raise StreamFault(map_error(200, event, model=self.model))
        try:
            text = self._read_event(event)
        except translate.UnreadableReply:
            raise malformed_event() from None
        if self.scanner is not None and text:
            text = self._scan(text)
        if self._extra is None:
            if not text:
                return []
            self.tokens_seen += 1
            return [self._chunk(text)]
        reasoning, calls = self._extra
        self._extra = None
        chunks = [self._chunk(delta={"reasoning_content": reasoning})] if reasoning else []
        if text:
            self.tokens_seen += 1
            chunks.append(self._chunk(text))
        if calls:
            self.tokens_seen += 1
            chunks.append(self._chunk(delta={"tool_calls": calls}))
        return chunks

    def _scan(self, text):
        """The text that may go out before a stop sequence; ends the stream on one."""
        text = self.scanner.feed(text)
        if self.scanner.stopped:
            self.done = self.cut_short = True
            self.upstream_finish = "stop"
        return text

    def _note(self, reasoning, raw_calls):
        """Keep the reasoning and tool call pieces of this event, for `feed` to send."""
        calls = self.calls.feed(raw_calls) if raw_calls and self.chat else []
        if reasoning or calls:
            self._extra = (reasoning if self.chat else None, calls)

    def _read_event(self, event):
        if "choices" not in event:
            if "usage" in event:
                self.final_usage = translate.normalise_usage(event["usage"])
            raw_calls = event.get("tool_calls")
            if raw_calls and isinstance(raw_calls, list):
                self._note(None, raw_calls)
            return translate.as_text(event.get("response"))
        if "usage" in event:
            self.chunk_usage = translate.normalise_usage(event["usage"]) or self.chunk_usage
        choices = event["choices"]
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]
        if choice.get("finish_reason") and self.upstream_finish is None:
            self.upstream_finish = choice["finish_reason"]
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return translate.as_text(choice.get("text"))
        raw_calls = delta.get("tool_calls")
        reasoning = translate.reasoning_of(delta)
        if reasoning or raw_calls:
            self._note(reasoning, raw_calls if isinstance(raw_calls, list) else None)
        content = delta.get("content")
        return translate.as_text(content if content is not None else choice.get("text"))

    def fail(self, error):
        """The events that tell the client the stream failed: one `{"error": ...}` event."""
        return [error_body(error)]

    @property
    def usage(self):
        """Cloudflare's usage: the closing cumulative event, else the last chunk's."""
        return self.final_usage or self.chunk_usage

    def replay(self, reply):
        """Every chunk of a stream for a whole `Reply` (JSON sent for a stream request): each
        choice's role, reasoning, text and tool calls, then its finish chunk."""
        chunks = []
        self.done = True
        self.final_usage = reply.usage
        for index, one in enumerate([reply, *reply.more]):
            if self.chat:
                chunks.append(self._chunk(role=True, index=index))
            if one.reasoning and self.chat:
                chunks.append(self._chunk(delta={"reasoning_content": one.reasoning},
                                          index=index))
            if one.text:
                chunks.append(self._chunk(one.text, index=index,
                                          logprobs=one.logprobs if self.chat else None))
            if one.tool_calls and self.chat:
                chunks.append(self._chunk(delta={"tool_calls": replay_deltas(one.tool_calls)},
                                          index=index))
            chunks.append(self._chunk(finish_reason=translate.reply_finish(one, self.max_tokens),
                                      index=index))
        return chunks + self._usage_chunk()

    def finish(self):
        """The final chunk with the real finish_reason, and the usage chunk when asked for."""
        chunks = []
        if self.scanner is not None and not self.scanner.stopped:
            rest = self.scanner.flush()
            if rest:
                self.tokens_seen += 1
                chunks.append(self._chunk(rest))
        usage = self.usage
        if self.calls.started:
            reason = "tool_calls"
        elif self.cut_short:
            reason = "stop"
        else:
            reason = translate.finish_reason(usage, self.max_tokens, self.upstream_finish,
                                             self.tokens_seen)
        chunks.append(self._chunk(finish_reason=reason))
        return chunks + self._usage_chunk()

    def _usage_chunk(self):
        chunks = []
        usage = self.usage
        if self.include_usage:
            tail = self._chunk()
            tail["choices"] = []
            tail["usage"] = usage
            chunks.append(tail)
        return chunks
