"""Relay a Workers AI SSE stream to the client, each event as soon as it arrives.

A reader (a greenlet under gunicorn's gevent worker) pulls upstream bytes into a
queue, so the relay can wait with a timeout: while Cloudflare is silent the client
gets `: keep-alive` comments (nginx and browsers cut silent streams), the stream's
total duration is capped (a read timeout is not a deadline), and a client that went
away is noticed within about a second even when nothing is being written. Any fault
after the first byte becomes exactly one `data: {"error": ...}` event, and the
upstream response is always closed, also when the client goes away (GeneratorExit).
"""
import logging
import queue
import select
import socket
import threading
import time

import requests
import urllib3

from gateway import metrics
from gateway.errors import UpstreamError, UpstreamTimeoutError, error_body
from gateway.request_log import RequestStats
from gateway.sse import DONE, KEEP_ALIVE, SSEDecoder, SSEFormatError, encode
from gateway.stream_translate import StreamFault, malformed_event

log = logging.getLogger(__name__)

READ_SIZE = 65536
POLL_INTERVAL = 1.0  # seconds between client-liveness checks while upstream is silent
NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)
_EOF = object()


def _pump(response, inbox):
    """Reader: upstream bytes into `inbox` as they arrive, then _EOF or the exception."""
    try:
        raw = response.raw
        while True:
            data = raw.read1(READ_SIZE, decode_content=True)
            if not data:
                break
            inbox.put(data)
        inbox.put(_EOF)
    except BaseException as exc:  # noqa: BLE001 - handed to the relay, which decides
        inbox.put(exc)


def client_gone(sock):
    """Whether the client closed its connection (readable with nothing to read)."""
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def abort(response):
    """Close an upstream response now, waking a reader blocked on its socket."""
    connection = getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    response.close()


def _events(response, heartbeat, deadline, client_socket):
    """Upstream byte chunks, with None meaning "send a heartbeat now"."""
    inbox = queue.SimpleQueue()
    threading.Thread(target=_pump, args=(response, inbox), daemon=True).start()
    last_activity = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= deadline:
            raise StreamFault(UpstreamTimeoutError("The stream reached the gateway's maximum "
                                                   "duration (STREAM_MAX_DURATION)."))
        wait = min(POLL_INTERVAL, deadline - now, max(0.0, last_activity + heartbeat - now))
        try:
            item = inbox.get(timeout=wait) if wait > 0 else inbox.get_nowait()
        except queue.Empty:
            if client_gone(client_socket):
                return
            if time.monotonic() - last_activity >= heartbeat:
                last_activity = time.monotonic()
                yield None
            continue
        if item is _EOF:
            return
        if isinstance(item, BaseException):
            raise item
        last_activity = time.monotonic()
        yield item


def relay(response, translator, *, heartbeat=15.0, max_duration=540.0, client_socket=None,
          stats=None):
    """The client's SSE bytes for an open upstream stream response."""
    decoder = SSEDecoder()
    deadline = time.monotonic() + max_duration
    stats = stats or RequestStats(started=time.perf_counter())
    metrics.OPEN_STREAMS.inc()
    try:
        stats.first_byte()
        yield b"".join(map(encode, translator.start()))
        for data in _events(response, heartbeat, deadline, client_socket):
            if data is None:
                yield KEEP_ALIVE
                continue
            out = [encode(chunk) for payload in decoder.feed(data)
                   for chunk in translator.feed(payload)]
            if out:
                if stats.ttft_ms is None and translator.tokens_seen:
                    stats.first_token()
                yield b"".join(out)
            if translator.done:
                break
        if not translator.done:
            for payload in decoder.flush():
                for chunk in translator.feed(payload):
                    yield encode(chunk)
        tail = b"".join(map(encode, translator.finish())) + DONE
        stats.usage(translator.usage)
        yield tail
    except StreamFault as fault:
        log.warning("upstream stream failed: %s", fault.error.message)
        yield encode(error_body(fault.error))
    except SSEFormatError:
        yield encode(error_body(malformed_event().error))
    except (requests.Timeout, urllib3.exceptions.ReadTimeoutError, TimeoutError):
        log.warning("upstream stream went silent past the read timeout")
        yield encode(error_body(UpstreamTimeoutError("Workers AI went silent mid-stream.")))
    except NETWORK_ERRORS as exc:
        log.warning("upstream stream broke: %s", type(exc).__name__)
        yield encode(error_body(UpstreamError("The connection to Workers AI broke mid-stream.")))
    finally:
        metrics.OPEN_STREAMS.dec()
        abort(response)


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
