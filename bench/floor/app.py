"""The floor of gunicorn + gevent: the cheapest honest relay to Workers AI, for bench/ only.

Not the product. It answers what bench/ asks, as cheaply as Python on this stack can:
no Flask, no validation beyond what the relay needs, no requests/urllib3, no logging,
no metrics. `POST /v1/chat/completions` reads the JSON body, sends the Workers AI request
(`POST {base}/accounts/{id}/ai/run/{model}`) in one `send()` over a per-worker pool of
kept-alive gevent sockets, reads the answer (Content-Length or chunked) and translates
it: a `chat.completion`, or each Workers AI SSE event relayed as a `chat.completion.chunk`
(role with the first content, content chunks built from pre-encoded pieces, finish
chunk, usage chunk when asked, `[DONE]`), one write per upstream read. `GET /healthz` is
200. One gevent Timeout per request bounds it (FLOOR_TIMEOUT, 300 s).

What the gateway costs beyond this is what its frameworks and features cost:
`python bench/run.py --current-root bench/floor --base REF` measures the floor as
"current" against any commit (bench/README.md, bench/RESULTS.md).
"""
import itertools
import os
import socket
import time

import orjson
from gevent import Timeout

from gateway.ops.fast_send import sendall  # gunicorn.conf.py puts the repository on sys.path

KEYS = {k.strip() for k in (os.environ.get("API_KEYS") or "").split(",") if k.strip()}
AUTHS = {"Bearer " + k for k in KEYS}
ACCOUNT = os.environ.get("CLOUDFLARE_ACCOUNT_ID", "")
TOKEN = os.environ.get("CLOUDFLARE_API_TOKEN", "")
BASE = os.environ.get("CLOUDFLARE_API_BASE") or "http://127.0.0.1:8787/client/v4"
LIMIT = float(os.environ.get("FLOOR_TIMEOUT") or 300)

_hostport, _, _prefix = BASE.removeprefix("http://").partition("/")
_host, _, _port = _hostport.partition(":")
UPSTREAM = (_host, int(_port or 80))
RUN_HEAD = (f"POST /{_prefix}/accounts/{ACCOUNT}/ai/run/%s HTTP/1.1\r\nHost: {_hostport}\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n").encode("latin-1")

IDLE = []  # this worker's kept-alive upstream sockets
IDS = itertools.count(1)
ID_PREFIX = "chatcmpl-" + os.urandom(6).hex()
DONE = b"data: [DONE]\n\n"
SSE = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]


class UpstreamError(Exception):
    pass


def connect():
    sock = socket.create_connection(UPSTREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send_request(path, payload):
    """(socket, status, headers bytes, bytes read past the head): a pooled socket, one send."""
    request = RUN_HEAD % (path, len(payload)) + payload
    while True:
        pooled = bool(IDLE)
        sock = IDLE.pop() if pooled else connect()
        buf = b""
        try:
            sendall(sock, request)
            while True:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionResetError("upstream closed")
                buf += data
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    break
        except OSError:
            sock.close()
            if pooled and not buf:  # a kept-alive socket the upstream had closed: once more
                continue
            raise
        head = buf[:end].lower()
        return sock, int(head[9:12]), head, buf[end + 4:]


def read_body(sock, head, rest):
    """The whole body (Content-Length or chunked); puts the socket back when it may be reused."""
    if b"transfer-encoding: chunked" in head:
        body, rest = dechunk_all(sock, rest)
    else:
        at = head.find(b"content-length:")
        if at < 0:
            raise UpstreamError("upstream answer without length")
        length = int(head[at + 15:head.find(b"\r\n", at) if b"\r\n" in head[at:] else None])
        while len(rest) < length:
            data = sock.recv(65536)
            if not data:
                raise UpstreamError("upstream closed mid-body")
            rest += data
        body = rest[:length]
    if b"connection: close" in head:
        sock.close()
    else:
        IDLE.append(sock)
    return body


def dechunk_all(sock, raw):
    parts = []
    pos = 0
    while True:
        i = raw.find(b"\r\n", pos)
        if i >= 0:
            size = int(raw[pos:i].split(b";", 1)[0], 16)
            if size == 0:
                if raw.find(b"\r\n\r\n", i) >= 0 or raw[i + 2:i + 4] == b"\r\n":
                    return b"".join(parts), b""
            elif len(raw) >= i + 4 + size:
                parts.append(raw[i + 2:i + 2 + size])
                pos = i + 4 + size
                continue
        data = sock.recv(65536)
        if not data:
            raise UpstreamError("upstream closed mid-body")
        raw = raw[pos:] + data
        pos = 0


def answer(start_response, status, body):
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def error(start_response, status, message, kind="api_error", code=None):
    return answer(start_response, status, orjson.dumps(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}))


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/healthz":
        return answer(start_response, "200 OK", b'{"ok":true}')
    if path != "/v1/chat/completions" or environ["REQUEST_METHOD"] != "POST":
        return error(start_response, "404 Not Found", "Unknown path.", "invalid_request_error")
    if environ.get("HTTP_AUTHORIZATION") not in AUTHS:
        return error(start_response, "401 Unauthorized", "Incorrect API key provided.",
                     "invalid_request_error", "invalid_api_key")
    try:
        request = orjson.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
        model = request["model"]
        upstream = {"messages": request["messages"]}
    except (ValueError, KeyError, TypeError):
        return error(start_response, "400 Bad Request", "Body must be JSON with model and "
                     "messages.", "invalid_request_error")
    max_tokens = request.get("max_tokens") or request.get("max_completion_tokens")
    if max_tokens is not None:
        upstream["max_tokens"] = max_tokens
    if request.get("temperature") is not None:
        upstream["temperature"] = request["temperature"]
    stream = request.get("stream") is True
    if stream:
        upstream["stream"] = True
    timer = Timeout.start_new(LIMIT)
    try:
        sock, status, head, rest = send_request(model.encode(), orjson.dumps(upstream))
    except BaseException:
        timer.cancel()
        raise
    if status != 200:
        try:
            read_body(sock, head, rest)
        finally:
            timer.cancel()
        return error(start_response, "502 Bad Gateway", f"Workers AI answered {status}.")
    ident = f"{ID_PREFIX}{next(IDS):08x}"
    created = int(time.time())
    if not stream:
        try:
            result = orjson.loads(read_body(sock, head, rest))["result"]
        finally:
            timer.cancel()
        usage = result.get("usage") or {}
        completion = usage.get("completion_tokens", 0)
        reason = "length" if max_tokens and completion >= max_tokens else "stop"
        return answer(start_response, "200 OK", orjson.dumps({
            "id": ident, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": result.get("response") or "",
                                                 "refusal": None},
                         "finish_reason": reason, "logprobs": None}],
            "usage": usage}))
    include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    envelope = (b'data: {"id":"' + ident.encode() + b'","object":"chat.completion.chunk",'
                b'"created":%d,"model":' % created + orjson.dumps(model) + b',"choices":[')
    frames = Frames(envelope, max_tokens, include_usage)
    start_response("200 OK", SSE)
    return wsgi_stream(sock, head, rest, frames, timer)


def wsgi_stream(sock, head, rest, frames, timer):
    try:
        yield from relay(sock, head, rest, frames)
    finally:
        timer.cancel()


class Frames:
    """The OpenAI chunks of one stream, built from pre-encoded pieces."""

    __slots__ = ("envelope", "prefix", "max_tokens", "include_usage", "role_sent", "count")

    def __init__(self, envelope, max_tokens, include_usage):
        self.envelope = envelope
        self.prefix = envelope + b'{"index":0,"delta":{"content":'
        self.max_tokens = max_tokens
        self.include_usage = include_usage
        self.role_sent = False
        self.count = 0

    def role(self):
        return self.envelope + (b'{"index":0,"delta":{"role":"assistant","content":""},'
                                b'"finish_reason":null,"logprobs":null}]}\n\n')

    def tail(self, usage):
        completion = usage.get("completion_tokens", self.count) if usage else self.count
        max_tokens = self.max_tokens
        reason = b"length" if max_tokens and completion >= max_tokens else b"stop"
        out = (self.envelope + b'{"index":0,"delta":{},"finish_reason":"' + reason
               + b'","logprobs":null}]}\n\n')
        if self.include_usage:
            out += self.envelope + b'],"usage":' + orjson.dumps(usage or {
                "prompt_tokens": 0, "completion_tokens": self.count,
                "total_tokens": self.count}) + b"}\n\n"
        return out + DONE


SUFFIX = b'},"finish_reason":null,"logprobs":null}]}\n\n'


def relay(sock, head, raw, frames):
    """Yield the OpenAI SSE bytes for each upstream read: everything the read completed."""
    if b"transfer-encoding: chunked" not in head:
        raise UpstreamError("stream answer is not chunked")
    loads, dumps, prefix = orjson.loads, orjson.dumps, frames.prefix
    sse = b""
    usage = None
    finished = False
    reusable = b"connection: close" not in head
    try:
        while True:
            # De-chunk what we have.
            pos = 0
            parts = []
            while True:
                i = raw.find(b"\r\n", pos)
                if i < 0:
                    break
                size = int(raw[pos:i].split(b";", 1)[0], 16)
                if size == 0:
                    if raw.find(b"\r\n\r\n", i) < 0 and raw[i + 2:i + 4] != b"\r\n":
                        break
                    finished = True
                    pos = len(raw)
                    break
                end = i + 2 + size
                if len(raw) < end + 2:
                    break
                parts.append(raw[i + 2:end])
                pos = end + 2
            raw = raw[pos:]
            out = []
            if parts:
                sse += b"".join(parts) if len(parts) > 1 else parts[0]
                events = sse.split(b"\n\n")
                sse = events.pop()
                for event in events:
                    if not event.startswith(b"data:"):
                        continue
                    data = event[5:].strip()
                    if data == b"[DONE]":
                        continue
                    item = loads(data)
                    text = item.get("response")
                    if text:
                        frames.count += 1
                        out.append(prefix + dumps(text) + SUFFIX)
                    if item.get("usage"):
                        usage = item["usage"]
            if finished:
                out.append(frames.tail(usage))
            if out:
                if not frames.role_sent:
                    frames.role_sent = True
                    out.insert(0, frames.role())
                yield b"".join(out)
            if finished:
                break
            data = sock.recv(65536)
            if not data:
                raise UpstreamError("upstream closed mid-stream")
            raw += data
    except BaseException:
        sock.close()
        raise
    if reusable:
        IDLE.append(sock)
    else:
        sock.close()
