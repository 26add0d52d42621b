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
import gevent
import urllib3
from gevent import monkey

from gateway import metrics
from gateway.errors import UpstreamError, UpstreamTimeoutError, error_body
from gateway.request_log import RequestStats
from gateway.sse import DONE, KEEP_ALIVE, SSEDecoder, SSEFormatError, encode
from gateway.stream_translate import StreamFault, malformed_event

log = logging.getLogger(__name__)

READ_SIZE = 65536
POLL_INTERVAL = 1.0  # seconds between client-liveness checks while upstream is silent
NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)
DRAIN_TIMEOUT = 1.0  # seconds the reader gets to finish the body or let go of it
_EOF = object()


def _spawn(target):
    """Run `target` concurrently: a bare greenlet under gevent (a patched Thread costs several
    times more to start), a daemon thread elsewhere (unit tests)."""
    if monkey.is_module_patched("threading"):
        return gevent.spawn(target)
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def _alive(worker):
    """Whether a reader greenlet or thread is still running."""
    return worker.is_alive() if isinstance(worker, threading.Thread) else not worker.dead


class UpstreamReader:
    """Reads the upstream body in its own greenlet so the relay can wait with a timeout."""

    def __init__(self, response):
        self.response = response
        self.inbox = queue.SimpleQueue()
        self.thread = _spawn(self._pump)

    def _pump(self):
        """Upstream bytes into the inbox as they arrive, then _EOF or the exception."""
        try:
            raw = self.response.raw
            while True:
                data = raw.read1(READ_SIZE, decode_content=True)
                if not data:
                    break
                self.inbox.put(data)
            self.inbox.put(_EOF)
        except BaseException as exc:  # noqa: BLE001 - handed to the relay, which decides
            self.inbox.put(exc)

    def get(self, timeout):
        """The next item (bytes, _EOF or an exception); queue.Empty after `timeout` seconds."""
        return self.inbox.get(timeout=timeout) if timeout > 0 else self.inbox.get_nowait()

    def close(self, finished):
        """Stop reading and close the response.

        After a complete stream the reader is given a moment to read the body's end, so
        urllib3 returns the connection to the pool for the next request (keep-alive to
        Cloudflare). Otherwise the socket is shut down to wake the reader at once, and
        the response is closed only after the reader let go of it.
        """
        if finished:
            self.thread.join(DRAIN_TIMEOUT)
        if _alive(self.thread):
            try:
                self.response.raw.shutdown()
            except (AttributeError, ValueError, RuntimeError, OSError):
                pass
            self.thread.join(DRAIN_TIMEOUT)
        close_quietly(self.response)


def close_quietly(response):
    """Close an upstream response; a reader stuck inside it must not make this raise."""
    try:
        response.close()
    except (RuntimeError, OSError):
        pass


class ClientGone(Exception):
    """The client closed its connection while the upstream was silent."""


# The real poll, even under gevent: it has no FD_SETSIZE limit (select() fails for
# descriptors >= 1024) and with a zero timeout it never blocks the hub.
_poll = monkey.get_original("select", "poll")


def client_gone(sock):
    """Whether the client closed its connection (readable with nothing to read)."""
    if sock is None:
        return False
    try:
        poller = _poll()
        poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)
        events = poller.poll(0)
    except (OSError, ValueError):
        return False  # cannot tell: the next write will
    if not events:
        return False
    if events[0][1] & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
        return True
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _events(reader, heartbeat, deadline, client_socket):
    """Upstream byte chunks, with None meaning "send a heartbeat now"."""
    last_activity = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= deadline:
            raise StreamFault(UpstreamTimeoutError("The stream reached the gateway's maximum "
                                                   "duration (STREAM_MAX_DURATION)."))
        wait = min(POLL_INTERVAL, deadline - now, max(0.0, last_activity + heartbeat - now))
        try:
            item = reader.get(wait)
        except queue.Empty:
            if client_gone(client_socket):
                raise ClientGone()
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
    reader = None
    metrics.OPEN_STREAMS.inc()
    try:
        stats.first_byte()
        yield b"".join(map(encode, translator.start()))
        reader = UpstreamReader(response)
        for data in _events(reader, heartbeat, deadline, client_socket):
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
    except ClientGone:
        log.info("client went away mid-stream")
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
        if reader is None:
            close_quietly(response)
        else:
            reader.close(finished=translator.done)


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
