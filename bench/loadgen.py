"""Load generator: N concurrent clients on one connection each, every response verified.

Raw asyncio (uvloop) HTTP/1.1 client, so that one process can drive 2,000 concurrent
streams and still leave most of the shared cores to the gateway. Each client sends
`POST /v1/chat/completions` (the same request to the gateway and to the fake's OpenAI
route), waits for the whole answer, verifies it, and sends the next one, until the
duration or the request budget is spent; requests in flight then finish (each bounded
by `--timeout`). Clients start staggered over `--ramp` seconds.

A response counts as ok only when: status 200 with the right content type; for a
stream, every `data:` event is JSON (a `chat.completion.chunk` with one id, no error
object), the first carries the assistant role, the content deltas joined are exactly
the text the fake sent, exactly one chunk has the expected finish_reason, the usage
chunk counts the tokens, exactly one `data: [DONE]` ends it and the chunked body is
complete; for a non-stream answer, the same checks on the `chat.completion` object.

Timings (ms, from writing the request): `latency` (whole response), `ttft` (arrival of
the first chunk with non-empty content) and `total` (end of the stream). Output: one
JSON object (counts, samples, failures by reason, own CPU seconds) on stdout or --out.
"""
import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections import Counter

import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

try:
    import uvloop
except ImportError:  # pragma: no cover - the bench requirements install it
    uvloop = None

perf = time.perf_counter

HEAD, LENGTH, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER, UNTIL_CLOSE, DONE = range(8)


class ProtocolError(Exception):
    pass


class Exchange:
    """One request's response: incremental HTTP/1.1 parsing, SSE splitting, verification."""

    def __init__(self, stream, future):
        self.stream = stream
        self.future = future
        self.state = HEAD
        self.buf = bytearray()
        self.status = None
        self.headers = {}
        self.keep_alive = True
        self.remaining = 0
        self.body = bytearray()     # non-stream body
        self.sse = bytearray()      # stream bytes not yet split into events
        self.t_first = None         # first content delta
        self.t_event = None         # first SSE event (the role chunk)
        self.t_end = None
        self.error = None           # first verification problem seen while streaming
        self.parts = []
        self.chunk_id = None
        self.events = 0
        self.done_events = 0
        self.role_first = False
        self.finish = []
        self.usage = None

    # ------------------------------------------------------------------ HTTP

    def feed(self, data, now):
        buf = self.buf
        buf += data
        while True:
            state = self.state
            if state == HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.parse_head(bytes(buf[:end]))
                del buf[:end + 4]
            elif state == LENGTH:
                take = min(self.remaining, len(buf))
                if take:
                    self.on_body(bytes(buf[:take]), now)
                    del buf[:take]
                    self.remaining -= take
                if self.remaining:
                    return
                self.complete(now)
                return
            elif state == CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                try:
                    size = int(bytes(buf[:end]).split(b";")[0], 16)
                except ValueError:
                    raise ProtocolError("bad chunk size") from None
                del buf[:end + 2]
                if size == 0:
                    self.state = TRAILER
                else:
                    self.remaining = size
                    self.state = CHUNK_DATA
            elif state == CHUNK_DATA:
                if not buf:
                    return
                take = min(self.remaining, len(buf))
                self.on_body(bytes(buf[:take]), now)
                del buf[:take]
                self.remaining -= take
                if self.remaining:
                    return
                self.state = CHUNK_CRLF
            elif state == CHUNK_CRLF:
                if len(buf) < 2:
                    return
                if buf[:2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                del buf[:2]
                self.state = CHUNK_SIZE
            elif state == TRAILER:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                line = bytes(buf[:end])
                del buf[:end + 2]
                if not line:
                    self.complete(now)
                    return
            elif state == UNTIL_CLOSE:
                if buf:
                    self.on_body(bytes(buf), now)
                    buf.clear()
                return
            else:
                if buf:
                    raise ProtocolError("bytes after the end of the response")
                return

    def parse_head(self, head):
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ProtocolError(f"bad status line {lines[0][:60]!r}")
        self.status = int(parts[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        connection = self.headers.get("connection", "").lower()
        self.keep_alive = connection != "close" if parts[0] == "HTTP/1.1" else connection == "keep-alive"
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            self.state = CHUNK_SIZE
        elif "content-length" in self.headers:
            self.remaining = int(self.headers["content-length"])
            self.state = LENGTH
        else:
            self.state = UNTIL_CLOSE
            self.keep_alive = False

    def complete(self, now):
        self.state = DONE
        self.t_end = now
        if self.sse:
            self.events_of(self.sse, now, final=True)
        if not self.future.done():
            self.future.set_result(self)

    def closed(self, exc):
        """The connection closed: the end of an until-close body, otherwise a failure."""
        if self.future.done():
            return
        if self.state == UNTIL_CLOSE:
            self.complete(perf())
        else:
            self.future.set_exception(ProtocolError(
                "connection closed mid-response" if self.state != HEAD else
                "connection closed before the response" + (f": {exc}" if exc else "")))

    # ------------------------------------------------------------------ body and SSE

    def on_body(self, data, now):
        if not self.stream or self.status != 200:
            self.body += data
            return
        self.sse += data
        if b"\n\n" in self.sse:
            self.events_of(self.sse, now)

    def events_of(self, sse, now, final=False):
        blocks = bytes(sse).split(b"\n\n")
        rest = blocks.pop()
        sse.clear()
        sse += rest
        if final and rest.strip():
            self.problem("stream ended inside an event")
        for block in blocks:
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    self.on_data(line[5:].strip(), now)
                elif line.startswith(b":") or not line:
                    continue  # comment (keep-alive)
                else:
                    self.problem(f"unexpected SSE line {line[:40]!r}")

    def problem(self, message):
        if self.error is None:
            self.error = message

    def on_data(self, payload, now):
        if self.t_event is None:
            self.t_event = now
        if self.done_events:
            self.problem("event after [DONE]")
        if payload == b"[DONE]":
            self.done_events += 1
            return
        self.events += 1
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.problem("event is not JSON")
            return
        if not isinstance(chunk, dict) or "error" in chunk:
            self.problem("error event" if isinstance(chunk, dict) else "event is not an object")
            return
        if chunk.get("object") != "chat.completion.chunk":
            self.problem("object is not chat.completion.chunk")
        if self.chunk_id is None:
            self.chunk_id = chunk.get("id")
        elif chunk.get("id") != self.chunk_id:
            self.problem("chunk ids differ")
        choices = chunk.get("choices")
        if choices == []:
            self.usage = chunk.get("usage")
            return
        try:
            choice = choices[0]
            delta = choice["delta"]
        except (TypeError, IndexError, KeyError):
            self.problem("chunk without choices[0].delta")
            return
        if self.events == 1:
            self.role_first = delta.get("role") == "assistant"
        content = delta.get("content")
        if content:
            if self.t_first is None:
                self.t_first = now
            self.parts.append(content)
        reason = choice.get("finish_reason")
        if reason is not None:
            self.finish.append(reason)

    # ------------------------------------------------------------------ verdict

    def verify(self, seed, count, max_tokens):
        """None when the response is right, else the reason it is not."""
        if self.status != 200:
            return f"HTTP {self.status}"
        kind = self.headers.get("content-type", "")
        expected = common.expected_text(seed, count)
        reason = common.finish_reason(count, max_tokens)
        if not self.stream:
            if not kind.startswith("application/json"):
                return "content type is not JSON"
            try:
                body = orjson.loads(self.body)
                choice = body["choices"][0]
                text = choice["message"]["content"]
            except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
                return "body is not a chat.completion"
            if body.get("object") != "chat.completion":
                return "object is not chat.completion"
            if text != expected:
                return "text differs from what the fake sent"
            if choice.get("finish_reason") != reason:
                return f"finish_reason {choice.get('finish_reason')!r}"
            if (body.get("usage") or {}).get("completion_tokens") != count:
                return "usage.completion_tokens differs"
            return None
        if not kind.startswith("text/event-stream"):
            return "content type is not text/event-stream"
        if self.error:
            return self.error
        if self.done_events != 1:
            return f"{self.done_events} [DONE] events"
        if not self.role_first:
            return "first chunk has no assistant role"
        if "".join(self.parts) != expected:
            return "text differs from what the fake sent"
        if self.finish != [reason]:
            return f"finish_reasons {self.finish[:3]!r}"
        if (self.usage or {}).get("completion_tokens") != count:
            return "usage chunk missing or wrong"
        return None


class Connection(asyncio.Protocol):
    def __init__(self):
        self.transport = None
        self.exchange = None
        self.lost = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        now = perf()
        exchange = self.exchange
        if exchange is None:
            self.lost = True
            self.transport.close()
            return
        try:
            exchange.feed(data, now)
        except (ProtocolError, ValueError) as exc:
            if not exchange.future.done():
                exchange.future.set_exception(ProtocolError(str(exc)))
            self.lost = True
            self.transport.close()

    def connection_lost(self, exc):
        self.lost = True
        if self.exchange is not None:
            self.exchange.closed(exc)

    def close(self):
        self.lost = True
        if self.transport is not None:
            self.transport.close()


class Run:
    def __init__(self, args):
        self.args = args
        self.host, _, port = args.url.removeprefix("http://").partition(":")
        if self.host not in ("127.0.0.1", "localhost", "[::1]"):
            raise SystemExit("the load generator only talks to 127.0.0.1")
        self.port = int(port.split("/")[0] or 80)
        self.budget = args.max_requests
        self.next_seed = args.seed_base
        self.latency, self.ttft, self.total, self.done_at = [], [], [], []
        self.trace = []  # (sent, ttft or latency, total) per verified request, with --trace
        self.ok = 0
        self.failures = Counter()
        self.connects = 0

    def request_bytes(self, seed):
        args = self.args
        body = {"model": common.MODEL,
                "messages": [{"role": "user",
                              "content": common.directive(seed, args.tokens, args.first_ms,
                                                          args.gap_ms)}],
                "max_tokens": args.max_tokens, "temperature": 0.6}
        if args.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        payload = orjson.dumps(body)
        accept = "text/event-stream" if args.stream else "application/json"
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Authorization: Bearer {args.key}\r\nContent-Type: application/json\r\n"
                f"Accept: {accept}\r\nContent-Length: {len(payload)}\r\n\r\n")
        return head.encode() + payload

    async def connect(self):
        loop = asyncio.get_running_loop()
        self.connects += 1
        _, protocol = await asyncio.wait_for(
            loop.create_connection(Connection, self.host, self.port), self.args.timeout)
        return protocol

    async def client(self, index, start, deadline):
        args = self.args
        loop = asyncio.get_running_loop()
        delay = start + args.ramp * index / max(1, args.clients) - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        conn = None
        while loop.time() < deadline and self.budget > 0:
            self.budget -= 1
            seed = self.next_seed
            self.next_seed += 1
            try:
                if conn is None or conn.lost:
                    conn = await self.connect()
            except (TimeoutError, OSError) as exc:
                self.failures[f"connect: {type(exc).__name__}"] += 1
                conn = None
                await asyncio.sleep(0.05)
                continue
            future = loop.create_future()
            exchange = Exchange(args.stream, future)
            conn.exchange = exchange
            sent = perf()
            conn.transport.write(self.request_bytes(seed))
            try:
                await asyncio.wait_for(future, args.timeout)
            except TimeoutError:
                self.failures["timeout"] += 1
                conn.close()
                conn = None
                continue
            except ProtocolError as exc:
                self.failures[str(exc)] += 1
                conn.close()
                conn = None
                continue
            finally:
                if conn is not None:
                    conn.exchange = None
            problem = exchange.verify(seed, args.tokens, args.max_tokens)
            if problem is not None:
                self.failures[problem] += 1
            else:
                self.ok += 1
                elapsed = (exchange.t_end - sent) * 1000.0
                self.done_at.append(exchange.t_end)
                if args.trace:
                    first_event = exchange.t_event or exchange.t_end
                    self.trace.append((round(sent - self.wall0, 4), index,
                                       round(((exchange.t_first or exchange.t_end) - sent) * 1e3, 2),
                                       round(elapsed, 2), round((first_event - sent) * 1e3, 3)))
                if args.stream:
                    self.ttft.append((exchange.t_first - sent) * 1000.0)
                    self.total.append(elapsed)
                else:
                    self.latency.append(elapsed)
            if not exchange.keep_alive:
                conn.close()
                conn = None
            if args.think_ms:
                await asyncio.sleep(args.think_ms / 1000.0)
        if conn is not None:
            conn.close()

    async def main(self):
        args = self.args
        loop = asyncio.get_running_loop()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = self.wall0 = perf()
        start = loop.time() + 0.05
        deadline = start + args.duration
        clients = [asyncio.ensure_future(self.client(i, start, deadline))
                   for i in range(args.clients)]
        # Hard stop: nothing outlives duration + timeout (+ ramp and slack).
        hard = args.duration + args.ramp + args.timeout + 5
        done, pending = await asyncio.wait(clients, timeout=hard)
        for task in pending:
            task.cancel()
            self.failures["cancelled at the hard time limit"] += 1
        for task in done:
            if task.exception() is not None:
                self.failures[f"client crashed: {task.exception()!r}"[:120]] += 1
        wall = perf() - wall0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        # Steady-state throughput: completions after the ramp, before the deadline.
        t_start = wall0 + 0.05 + (args.ramp if args.clients > 1 else 0)
        t_stop = min(wall0 + 0.05 + args.duration, max(self.done_at, default=0.0))
        window = [t for t in self.done_at if t_start <= t <= t_stop]
        span = max(1e-9, t_stop - t_start)
        return {
            "url": args.url, "stream": args.stream, "clients": args.clients,
            "duration": args.duration, "ramp": args.ramp, "wall": wall,
            "ok": self.ok, "failed": sum(self.failures.values()),
            "failures": dict(self.failures.most_common(10)),
            "throughput": len(window) / span if self.ok else 0.0,
            "connects": self.connects,
            "latency": self.latency, "ttft": self.ttft, "total": self.total,
            "cpu": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
            "maxrss_kib": cpu1.ru_maxrss,
            **({"trace": self.trace} if args.trace else {}),
        }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--key", default=common.API_KEY)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of new requests")
    parser.add_argument("--max-requests", type=int, default=10000, help="request budget")
    parser.add_argument("--ramp", type=float, default=0.0, help="seconds to start all clients")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--first-ms", type=float, default=0.0)
    parser.add_argument("--gap-ms", type=float, default=0.0)
    parser.add_argument("--think-ms", type=float, default=0.0,
                        help="pause between a client's requests (default: none)")
    parser.add_argument("--seed-base", type=int, default=0)
    parser.add_argument("--trace", action="store_true",
                        help="also output (sent at, client, ttft or latency, total, first event) per request")
    parser.add_argument("--out", help="write the JSON result here instead of stdout")
    args = parser.parse_args(argv)
    if args.duration > 3600 or args.max_requests > 10_000_000:
        parser.error("runs are bounded: at most 3600 s and 10,000,000 requests")
    return args


def main(argv=None):
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    run = uvloop.run if uvloop is not None else asyncio.run
    result = run(Run(args).main())
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
