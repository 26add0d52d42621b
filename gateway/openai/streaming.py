"""Relay a Workers AI SSE stream to the client, each event as soon as it arrives.

The relaying greenlet reads the upstream body itself, one read at a time with a
timeout (`gateway.cloudflare.body`), so between reads it can send the client
`: keep-alive` comments whenever the client got nothing for STREAM_HEARTBEAT (nginx,
Heroku's router and load balancers cut silent connections; upstream bytes that produce
nothing for the client do not count), enforce the idle timeout, the stream's total
duration (a read timeout is not a deadline) and a worker shutdown, and notice within
about a second a client that went away even when nothing is being written. Any fault
after the first byte, an upstream that ends without `[DONE]` included, becomes exactly
one `data: {"error": ...}` event, and the upstream connection is always released: back
to the pool after a complete body, closed otherwise (also when the client goes away
and the server closes this generator). The request's stats count what the client was
written, event by event, and whether the end went out: what a stored key is charged.
"""
import logging
import select
import socket
import time

import gevent
import requests
import urllib3
from gevent import monkey

from gateway.ops import metrics, shutdown
from gateway.errors import ServiceUnavailableError, UpstreamError, UpstreamTimeoutError
from gateway.ops.request_log import RequestStats
from gateway.openai.sse import KEEP_ALIVE, SSEDecoder, SSEFormatError
from gateway.openai.stream_translate import StreamFault, malformed_event
from gateway.cloudflare.body import BodyFormatError, open_body

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.0  # seconds between client-liveness checks while upstream is silent
DRAIN_TIMEOUT = 5.0  # seconds to read a body's end after [DONE] (in the background), for reuse
NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)


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
    except ValueError:
        return False  # a TLS socket (gunicorn's certfile) cannot peek: the next write will tell
    except OSError:
        return True


class ShuttingDown(Exception):
    """The worker is about to be stopped (gateway.ops.shutdown)."""


class Clock:
    """The stream's deadlines: heartbeat, idle timeout, total duration and shutdown.

    `last_sent` is when the client last received something, `last_data` when upstream
    last sent body bytes: upstream bytes that produce nothing for the client (reasoning
    tokens, empty events, a line still being written) do not count as a heartbeat.
    """

    def __init__(self, heartbeat, idle_timeout, max_duration):
        now = time.monotonic()
        self.heartbeat, self.idle_timeout = heartbeat, idle_timeout
        self.deadline = now + max_duration
        self.last_data = self.last_sent = now

    def wait(self):
        """How long the next read may wait before something is due."""
        now = time.monotonic()
        return max(0.0, min(POLL_INTERVAL, self.deadline - now,
                            self.last_sent + self.heartbeat - now,
                            self.last_data + self.idle_timeout - now,
                            shutdown.cut_at - now))

    def check(self):
        """Raise when the stream ran or idled too long, or the worker is stopping."""
        now = time.monotonic()
        if now >= shutdown.cut_at:
            raise ShuttingDown()
        if now >= self.deadline:
            raise StreamFault(UpstreamTimeoutError(
                "The stream reached the gateway's maximum duration (STREAM_MAX_DURATION)."))
        if now - self.last_data >= self.idle_timeout:
            raise StreamFault(UpstreamTimeoutError("Workers AI went silent mid-stream."))

    def heartbeat_due(self):
        return time.monotonic() - self.last_sent >= self.heartbeat


def _chunks(body, clock, client_socket):
    """Upstream body bytes after each read: b"" when a read brought none (or timed out)."""
    while not body.complete:
        clock.check()
        try:
            data = body.read(clock.wait())
        except TimeoutError:
            clock.check()
            if client_gone(client_socket):
                raise ClientGone() from None
            data = b""
        if data:
            clock.last_data = time.monotonic()
        yield data


def relay(response, translator, *, heartbeat=15.0, idle_timeout=60.0, max_duration=540.0,
          client_socket=None, stats=None):
    """The client's SSE bytes for an open upstream stream response."""
    decoder = SSEDecoder()
    clock = Clock(heartbeat, idle_timeout, max_duration)
    stats = stats or RequestStats(started=time.perf_counter())
    stats.stream_complete = False
    body = None
    encode = translator.encode  # the chat chunks' framing, or another API's (Responses)
    metrics.OPEN_STREAMS.inc()
    try:
        stats.first_byte()
        yield b"".join(map(encode, translator.start()))
        body = open_body(response)
        for data in _chunks(body, clock, client_socket):
            out = b""
            if data:
                out, fault = _translate(decoder.feed(data), translator)
                if out:
                    clock.last_sent = clock.last_data
                    if stats.ttft_ms is None and translator.tokens_seen:
                        stats.first_token()
                    yield out
                    stats.streamed_tokens = translator.tokens_seen  # written: the client has it
                if fault is not None:
                    raise fault
                if translator.done:
                    break
            if not out and clock.heartbeat_due():
                clock.last_sent = time.monotonic()
                yield KEEP_ALIVE
        if not translator.done:
            for payload in decoder.flush():
                out = b"".join(map(encode, translator.feed(payload)))
                if out:
                    yield out
                    stats.streamed_tokens = translator.tokens_seen
        if not translator.done:
            raise StreamFault(UpstreamError("Workers AI ended the stream without [DONE]."))
        tail = b"".join(map(encode, translator.finish())) + translator.closing
        stats.usage(translator.usage)  # what Cloudflare generated: the log line and metrics
        yield tail
        stats.streamed_tokens = translator.tokens_seen
        stats.stream_complete = True  # the client has it all, usage included
        # Settled now, before the server sends the response's last bytes (the chunked end,
        # or closing the connection): a client that sends its next request once it has read
        # this response to its end finds it counted (gateway.state.guard).
        stats.final()
    except ClientGone:
        stats.error = "client_gone"
        log.info("client went away mid-stream")
    except ShuttingDown:
        log.warning("stream ended: the worker is shutting down (GRACEFUL_TIMEOUT)")
        yield _error_event(translator, ServiceUnavailableError(
            "The server is restarting and ended this stream; retry the request.",
            code="server_shutting_down"), stats)
    except StreamFault as fault:
        log.warning("upstream stream failed: %s", fault.error.message)
        yield _error_event(translator, fault.error, stats)
    except (SSEFormatError, BodyFormatError):
        yield _error_event(translator, malformed_event().error, stats)
    except (requests.Timeout, urllib3.exceptions.ReadTimeoutError, TimeoutError):
        log.warning("upstream stream went silent past the read timeout")
        yield _error_event(translator, UpstreamTimeoutError(
            "Workers AI went silent mid-stream."), stats)
    except NETWORK_ERRORS as exc:
        log.warning("upstream stream broke: %s", type(exc).__name__)
        yield _error_event(translator, UpstreamError(
            "The connection to Workers AI broke mid-stream."), stats)
    except Exception:  # noqa: BLE001 - headers are out: the client still gets one error event
        log.exception("stream relay failed")
        yield _error_event(translator, UpstreamError(
            "The gateway failed while relaying the stream.", code="internal_error"), stats)
    finally:
        metrics.OPEN_STREAMS.dec()
        _release(body, response, translator.upstream_finished)


def _error_event(translator, error, stats):
    """The event that ends a broken stream, in the translator's framing (chat: one
    `{"error": ...}` event); its code goes to the log line."""
    stats.error = error.code
    return b"".join(map(translator.encode, translator.fail(error)))


def _translate(payloads, translator):
    """The client bytes for a batch of upstream payloads, and the fault that cut it short.

    One read can carry several events; those before a broken one still go out.
    """
    out = []
    try:
        for payload in payloads:
            out.extend(map(translator.encode, translator.feed(payload)))
    except StreamFault as fault:
        return b"".join(out), fault
    return b"".join(out), None


def _release(body, response, finished):
    """Give the upstream connection back (complete body) or close it, whatever happened.

    After [DONE] the body's last bytes may still be on their way; the client's response
    must not wait for them (the OpenAI SDK waits for the end of the response), so under
    gevent they are read in a greenlet of their own.
    """
    if body is not None and finished and not body.complete and monkey.is_module_patched("socket"):
        gevent.spawn(_quietly, body.release, finished, DRAIN_TIMEOUT)
        return
    if body is None:
        _quietly(response.close)
    else:
        _quietly(body.release, finished, DRAIN_TIMEOUT)


def _quietly(action, *args):
    try:
        action(*args)
    except (OSError, RuntimeError):
        pass


def replay(reply, translator):
    """A proper stream for a reply Cloudflare sent as JSON although a stream was asked for."""
    return b"".join(map(translator.encode, translator.replay(reply))) + translator.closing
