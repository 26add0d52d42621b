"""Relay a Workers AI SSE stream to the client as OpenAI chunks, one event as it arrives.

`StreamTranslator` is pure (payloads in, chunk dicts out) so it can be tested on
every possible cut of the upstream bytes; `relay` is the generator the route hands
to Flask: it reads the upstream socket, never buffers an event, turns any fault
after the first byte into exactly one `data: {"error": ...}` event, and always closes
the upstream response, also when the client goes away (GeneratorExit).
"""
import logging

import requests
import urllib3

from gateway import jsonio, translate
from gateway.cloudflare_errors import map_error
from gateway.errors import UpstreamError, error_body
from gateway.sse import DONE, SSEDecoder, SSEFormatError, encode

log = logging.getLogger(__name__)

READ_SIZE = 65536
NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)


class StreamFault(Exception):
    """The upstream stream failed after the client got its first byte."""

    def __init__(self, error):
        super().__init__(error.message)
        self.error = error


def _malformed():
    return StreamFault(UpstreamError("Workers AI sent a malformed stream event."))


class StreamTranslator:
    """Turns Workers AI stream payloads into `chat.completion.chunk` or `text_completion` chunks."""

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
            raise _malformed() from None
        if not isinstance(event, dict):
            raise _malformed()
        if "error" in event or event.get("success") is False:
            raise StreamFault(map_error(200, event, model=self.model))
        try:
            text = self._read_event(event)
        except translate.UnreadableReply:
            raise _malformed() from None
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

    def finish(self):
        """The final chunk with the real finish_reason, and the usage chunk when asked for."""
        usage = self.final_usage or self.chunk_usage
        reason = translate.finish_reason(usage, self.max_tokens, self.upstream_finish,
                                         self.tokens_seen)
        chunks = [self._chunk(finish_reason=reason)]
        if self.include_usage:
            tail = self._chunk()
            tail["choices"] = []
            tail["usage"] = usage
            chunks.append(tail)
        return chunks


def _read_chunks(response):
    """Upstream body bytes as they arrive (read1 returns whatever one read delivers)."""
    raw = response.raw
    while True:
        data = raw.read1(READ_SIZE, decode_content=True)
        if not data:
            return
        yield data


def relay(response, translator):
    """The client's SSE bytes for an open upstream stream response."""
    decoder = SSEDecoder()
    try:
        yield b"".join(map(encode, translator.start()))
        for data in _read_chunks(response):
            out = [encode(chunk) for payload in decoder.feed(data)
                   for chunk in translator.feed(payload)]
            if out:
                yield b"".join(out)
            if translator.done:
                break
        if not translator.done:
            for payload in decoder.flush():
                for chunk in translator.feed(payload):
                    yield encode(chunk)
        yield b"".join(map(encode, translator.finish())) + DONE
    except StreamFault as fault:
        log.warning("upstream stream failed: %s", fault.error.message)
        yield encode(error_body(fault.error))
    except SSEFormatError:
        yield encode(error_body(_malformed().error))
    except NETWORK_ERRORS as exc:
        log.warning("upstream stream broke: %s", type(exc).__name__)
        yield encode(error_body(UpstreamError("The connection to Workers AI broke mid-stream.")))
    finally:
        response.close()


def replay(reply, translator):
    """A proper stream for a reply Cloudflare sent as JSON although a stream was asked for."""
    chunks = translator.start()
    if reply.text:
        translator.tokens_seen = 1
        chunks.append(translator._chunk(reply.text))
    translator.final_usage = reply.usage
    translator.upstream_finish = reply.finish_reason
    chunks.extend(translator.finish())
    return b"".join(map(encode, chunks)) + DONE

