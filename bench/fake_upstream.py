"""A fake Cloudflare Workers AI upstream for the benchmark: one process, one core, raw asyncio.

It has to be fast enough never to be the bottleneck (2,000 concurrent streams of one
event per 20 ms is 100,000 events/s), so it is an `asyncio.Protocol` on uvloop with a
minimal HTTP/1.1 parser (keep-alive, Content-Length bodies) and every byte it can
precomputed: each vocabulary token's SSE event is encoded once at start-up, and a
stream is a chain of timer callbacks writing prebuilt frames, no task per stream.

Routes (any path prefix before `/accounts/`, so `CLOUDFLARE_API_BASE` can be
`http://127.0.0.1:PORT/client/v4`):

* `POST .../accounts/{account}/ai/run/{model}`: Workers AI's wire format. Non-stream:
  `{"result":{"response":..,"usage":..},"success":true,"errors":[],"messages":[]}` at once.
  Stream: `text/event-stream`, chunked, `data: {"response":"<tok>","p":"<padding>"}`
  events, then `data: {"response":"","usage":{..}}` and `data: [DONE]`.
* `GET .../accounts/{account}/ai/models/search`: a one-model Text Generation catalogue.
* `POST /v1/chat/completions`: the same reply in OpenAI's format, byte for byte what the
  gateway would send (role chunk at once, content chunks on the same schedule, final
  chunk, usage chunk when asked, `[DONE]`): the floor the gateway is measured against.
* `GET /healthz`; `GET /_bench/stats` (requests, open connections and streams, the most
  streams open at once) and `POST /_bench/stats` (the same, then the peak is reset).

The reply is chosen by the `[[bench seed=.. tokens=.. first_ms=.. gap_ms=..]]` directive
in the last message (see `common.py`): the first token after `first_ms`, then one every
`gap_ms`, scheduled against absolute times so a busy loop does not stretch the stream.

Run: `python bench/fake_upstream.py [--port 0]`; it prints `listening http://127.0.0.1:PORT`.
"""
import argparse
import asyncio
import os
import re
import resource
import secrets
import signal
import sys
import time

import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

try:
    import uvloop
except ImportError:  # pragma: no cover - the bench requirements install it
    uvloop = None

RUN_PATH = re.compile(r"^.*/accounts/([^/]+)/ai/run/(.+)$")
SEARCH_PATH = re.compile(r"^.*/accounts/([^/]+)/ai/models/search$")
MAX_HEAD = 65536
MAX_BODY = 8 * 1024 * 1024


def chunk(data):
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
DONE_EVENT = b"data: [DONE]\n\n"
# Workers AI events, one per vocabulary token, with Cloudflare's `p` padding of varying length.
CF_EVENTS = [chunk(b"data: " + orjson.dumps({"response": tok, "p": common.PADDING[:4 + (i * 7) % 40]})
                   + b"\n\n") for i, tok in enumerate(common.VOCAB)]
TOKEN_JSON = [orjson.dumps(tok) for tok in common.VOCAB]

CATALOGUE = orjson.dumps({
    "success": True,
    "result": [{"id": "bench-0001", "source": 1, "name": common.MODEL,
                "description": "x", "task": {"id": "c329a1f9-323d-4e91-b2aa-582dd4188d34",
                                             "name": "Text Generation", "description": "x"},
                "created_at": "2024-07-23 18:40:56.158", "tags": [],
                "properties": [{"property_id": "context_window", "value": "8192"}]}],
    "errors": [], "messages": [],
    "result_info": {"page": 1, "per_page": 50, "count": 1, "total_count": 1},
})

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 413: "Payload Too Large"}


def cf_error(code, message):
    return orjson.dumps({"result": None, "success": False,
                         "errors": [{"code": code, "message": message}], "messages": []})


def openai_error(message, kind="invalid_request_error", code=None):
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


def read_request(body):
    """(seed, tokens, first_ms, gap_ms, max_tokens, stream, include_usage, model) of a JSON body."""
    data = orjson.loads(body)
    if not isinstance(data, dict):
        raise ValueError("body is not an object")
    text = data.get("prompt") or ""
    messages = data.get("messages")
    if isinstance(messages, list) and messages:
        content = messages[-1].get("content") if isinstance(messages[-1], dict) else None
        text = content if isinstance(content, str) else ""
    seed, count, first_ms, gap_ms = common.parse_directive(text)
    max_tokens = data.get("max_tokens") or data.get("max_completion_tokens") or 256
    options = data.get("stream_options") or {}
    return (seed, count, first_ms, gap_ms, int(max_tokens), bool(data.get("stream")),
            bool(options.get("include_usage")), data.get("model") or common.MODEL)


class Stats:
    requests = 0
    streams_open = 0
    streams_peak = 0
    connections = 0


class FakeProtocol(asyncio.Protocol):
    """One client connection: requests one after the other (keep-alive), no pipelining overlap."""

    __slots__ = ("loop", "transport", "buf", "busy", "keep_alive", "frames", "tail", "start",
                 "first", "gap", "index", "handle")

    def __init__(self, loop):
        self.loop = loop
        self.transport = None
        self.buf = bytearray()
        self.busy = False
        self.handle = None

    def connection_made(self, transport):
        self.transport = transport
        Stats.connections += 1

    def connection_lost(self, exc):
        Stats.connections -= 1
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
            Stats.streams_open -= 1
        self.transport = None

    def data_received(self, data):
        self.buf += data
        if not self.busy:
            self.process()

    # ---------------------------------------------------------------- request parsing

    def process(self):
        while not self.busy and self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.fail(400, b"header too large")
                return
            try:
                lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
                method, target, version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
            except ValueError:
                self.fail(400, b"bad request")
                return
            if "chunked" in headers.get("transfer-encoding", "").lower() or length > MAX_BODY:
                self.fail(400, b"chunked or oversized request bodies are not supported")
                return
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4:end + 4 + length])
            del self.buf[:end + 4 + length]
            connection = headers.get("connection", "").lower()
            self.keep_alive = (connection != "close" if version == "HTTP/1.1"
                               else connection == "keep-alive")
            Stats.requests += 1
            try:
                self.route(method, target, headers, body)
            except Exception as exc:  # noqa: BLE001 - a bad request must not kill the server
                self.respond(400, cf_error(5006, f"bad request: {exc}"))

    def fail(self, status, message):
        self.keep_alive = False
        self.respond(status, message, content_type=b"text/plain")

    # ---------------------------------------------------------------- responses

    def respond(self, status, body, content_type=b"application/json"):
        head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
            status, REASONS.get(status, "Error").encode(), content_type, len(body))
        if not self.keep_alive:
            head += b"Connection: close\r\n"
        self.transport.write(head + b"\r\n" + body)
        if not self.keep_alive:
            self.transport.close()

    def stream_head(self):
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                b"Transfer-Encoding: chunked\r\n")
        if not self.keep_alive:
            head += b"Connection: close\r\n"
        return head + b"\r\n"

    def start_stream(self, head, frames, tail, first_ms, gap_ms):
        """Send `head` now, then frames[i] at first_ms + i * gap_ms, then `tail` with the last."""
        if not frames or (first_ms <= 0 and gap_ms <= 0):
            self.transport.write(head + b"".join(frames) + tail)
            self.end_of_response()
            return
        self.transport.write(head)
        self.busy = True
        self.frames = frames
        self.tail = tail
        self.start = self.loop.time()
        self.first = first_ms / 1000.0
        self.gap = gap_ms / 1000.0
        self.index = 0
        Stats.streams_open += 1
        Stats.streams_peak = max(Stats.streams_peak, Stats.streams_open)
        self.handle = self.loop.call_at(self.start + self.first, self.tick)

    def tick(self):
        transport = self.transport
        if transport is None:
            return
        i = self.index
        if i + 1 < len(self.frames):
            transport.write(self.frames[i])
            self.index = i + 1
            self.handle = self.loop.call_at(self.start + self.first + self.gap * (i + 1), self.tick)
            return
        transport.write(self.frames[i] + self.tail)
        self.handle = None
        self.frames = self.tail = None
        Stats.streams_open -= 1
        self.end_of_response()

    def end_of_response(self):
        self.busy = False
        if not self.keep_alive:
            self.transport.close()
            return
        if self.buf:
            self.loop.call_soon(self.process)

    # ---------------------------------------------------------------- routes

    def route(self, method, target, headers, body):
        path = target.partition("?")[0]
        auth = headers.get("authorization", "")
        if path == "/v1/chat/completions":
            if method != "POST":
                return self.respond(405, openai_error("Use POST."))
            if auth != f"Bearer {common.API_KEY}":
                return self.respond(401, openai_error("Incorrect API key provided.",
                                                      code="invalid_api_key"))
            return self.openai_chat(body)
        match = RUN_PATH.match(path)
        if match:
            if method != "POST":
                return self.respond(405, cf_error(7001, "method not allowed"))
            if auth != f"Bearer {common.TOKEN}" or match.group(1) != common.ACCOUNT:
                return self.respond(401, cf_error(10000, "Authentication error"))
            return self.workers_ai_run(body)
        match = SEARCH_PATH.match(path)
        if match and method == "GET":
            if auth != f"Bearer {common.TOKEN}" or match.group(1) != common.ACCOUNT:
                return self.respond(401, cf_error(10000, "Authentication error"))
            return self.respond(200, CATALOGUE)
        if path == "/healthz":
            return self.respond(200, b'{"ok":true}')
        if path == "/_bench/stats":  # for the driver: how many streams were open at once
            stats = {"requests": Stats.requests, "connections": Stats.connections,
                     "streams_open": Stats.streams_open, "streams_peak": Stats.streams_peak}
            if method == "POST":
                Stats.streams_peak = Stats.streams_open
            return self.respond(200, orjson.dumps(stats))
        return self.respond(404, cf_error(7000, "No route for that URI"))

    def workers_ai_run(self, body):
        seed, count, first_ms, gap_ms, _max, stream, _usage, _model = read_request(body)
        ids = common.token_ids(seed, count)
        if not stream:
            text = "".join(common.VOCAB[i] for i in ids)
            return self.respond(200, orjson.dumps({
                "result": {"response": text, "usage": common.usage(count)},
                "success": True, "errors": [], "messages": []}))
        tail = (chunk(b"data: " + orjson.dumps({"response": "", "usage": common.usage(count)})
                      + b"\n\n") + chunk(DONE_EVENT) + LAST_CHUNK)
        self.start_stream(self.stream_head(), [CF_EVENTS[i] for i in ids], tail, first_ms, gap_ms)

    def openai_chat(self, body):
        seed, count, first_ms, gap_ms, max_tokens, stream, include_usage, model = read_request(body)
        ids = common.token_ids(seed, count)
        created = int(time.time())
        reason = common.finish_reason(count, max_tokens)
        if not stream:
            text = "".join(common.VOCAB[i] for i in ids)
            return self.respond(200, orjson.dumps({
                "id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion",
                "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                     "refusal": None},
                             "finish_reason": reason, "logprobs": None}],
                "usage": common.usage(count)}))
        envelope = {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion.chunk",
                    "created": created, "model": model}

        def event(choices, **extra):
            return chunk(b"data: " + orjson.dumps({**envelope, "choices": choices, **extra})
                         + b"\n\n")

        role = event([{"index": 0, "delta": {"role": "assistant", "content": ""},
                       "finish_reason": None, "logprobs": None}])
        # Content chunks from a template: the prefix up to the content string, then its suffix.
        probe = orjson.dumps({**envelope, "choices": [{"index": 0, "delta": {"content": "\x00"},
                                                       "finish_reason": None, "logprobs": None}]})
        prefix, suffix = probe.split(b'"\\u0000"')
        frames = [chunk(b"data: " + prefix + TOKEN_JSON[i] + suffix + b"\n\n") for i in ids]
        tail = event([{"index": 0, "delta": {}, "finish_reason": reason, "logprobs": None}])
        if include_usage:
            tail += event([], usage=common.usage(count))
        tail += chunk(DONE_EVENT) + LAST_CHUNK
        self.start_stream(self.stream_head() + role, frames, tail, first_ms, gap_ms)


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(host, port, stats_interval):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FakeProtocol(loop), host, port, backlog=8192,
                                      reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), stats_interval or None)
        except TimeoutError:
            print(f"requests={Stats.requests} connections={Stats.connections} "
                  f"streams_open={Stats.streams_open} streams_peak={Stats.streams_peak}",
                  file=sys.stderr, flush=True)
    server.close()
    print(f"fake upstream done: requests={Stats.requests} streams_peak={Stats.streams_peak}",
          file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1"],
                        help="only loopback is allowed")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stats-interval", type=float, default=0,
                        help="print counters to stderr every N seconds (0: never)")
    args = parser.parse_args()
    raise_fd_limit()
    run = uvloop.run if uvloop is not None else asyncio.run
    run(serve(args.host, args.port, args.stats_interval))


if __name__ == "__main__":
    main()
