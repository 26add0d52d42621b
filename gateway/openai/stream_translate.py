"""Pure stream translation: Workers AI `data:` payloads in, OpenAI chunk dicts out.

Both upstream stream shapes are read: classic `{"response": ...}` events and the
OpenAI-shaped `chat.completion.chunk` events of newer models, followed by
Cloudflare's closing `{"response": "", "usage": ...}` event. Whatever the upstream
repeats (finish frames, `[DONE]`) or pads (`p`), the client sees one role chunk,
content chunks with string content, one final chunk and, when asked, one usage chunk.
"""
from gateway import jsonio
from gateway.openai import translate
from gateway.openai.sse import DONE, encode
from gateway.cloudflare.error_map import map_error
from gateway.errors import UpstreamError, error_body


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

    def __init__(self, kind, *, model, max_tokens, include_usage, completion_id=None, created=None):
        self.chat = kind == "chat"
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

    def _chunk(self, text=None, finish_reason=None, role=False):
        if self.chat:
            delta = {} if text is None else {"content": text}
            if role:
                delta = {"role": "assistant", "content": ""}
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            kind = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish_reason,
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
        if not text:
            return []
        self.tokens_seen += 1
        return [self._chunk(text)]

    def _read_event(self, event):
        if "choices" not in event:
            if "usage" in event:
                self.final_usage = translate.normalise_usage(event["usage"])
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
        content = delta.get("content") if isinstance(delta, dict) else None
        return translate.as_text(content if content is not None else choice.get("text"))

    def fail(self, error):
        """The events that tell the client the stream failed: one `{"error": ...}` event."""
        return [error_body(error)]

    @property
    def usage(self):
        """Cloudflare's usage: the closing cumulative event, else the last chunk's."""
        return self.final_usage or self.chunk_usage

    def replay(self, reply):
        """Every chunk of a stream for a whole `Reply` (JSON sent for a stream request)."""
        chunks = self.start()
        if reply.text:
            self.tokens_seen = 1
            chunks.append(self._chunk(reply.text))
        self.final_usage = reply.usage
        self.upstream_finish = reply.finish_reason
        return chunks + self.finish()

    def finish(self):
        """The final chunk with the real finish_reason, and the usage chunk when asked for."""
        usage = self.usage
        reason = translate.finish_reason(usage, self.max_tokens, self.upstream_finish,
                                         self.tokens_seen)
        chunks = [self._chunk(finish_reason=reason)]
        if self.include_usage:
            tail = self._chunk()
            tail["choices"] = []
            tail["usage"] = usage
            chunks.append(tail)
        return chunks
