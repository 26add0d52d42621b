"""Relay a binary upstream answer (speech audio) to the client as its bytes arrive.

The body is read in the relaying greenlet with a timeout per read, like the SSE relay
(`gateway.openai.streaming`), so a silent upstream is given up after
UPSTREAM_READ_TIMEOUT and a long one after STREAM_MAX_DURATION. Bytes cannot carry an
error event: after a failure mid-way the client connection is shut down before the body's
end (its last chunk, or the forwarded Content-Length), which every HTTP client reports as
an incomplete body, and it is logged. The upstream connection is always released: back
to the pool after a complete body, closed otherwise.
"""
import logging
import socket
import time

import requests
import urllib3

from gateway.cloudflare.body import BodyFormatError, open_body
from gateway.ops import metrics

log = logging.getLogger(__name__)

DRAIN_TIMEOUT = 1.0


def relay_bytes(response, *, idle_timeout, max_duration, stats, client_socket=None):
    """The client's body for an open binary upstream response."""
    body = None
    finished = False
    deadline = time.monotonic() + max_duration
    metrics.OPEN_STREAMS.inc()
    try:
        body = open_body(response)
        while not body.complete:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("audio stream reached STREAM_MAX_DURATION; ended early")
                return
            data = body.read(min(idle_timeout, remaining))
            if data:
                stats.first_byte()
                yield data
        finished = True
    except (TimeoutError, requests.Timeout, urllib3.exceptions.ReadTimeoutError):
        log.warning("Workers AI went silent mid-audio; the answer ended early")
    except (OSError, BodyFormatError, requests.RequestException,
            urllib3.exceptions.HTTPError) as exc:
        log.warning("the audio stream from Workers AI broke: %s", type(exc).__name__)
    finally:
        metrics.OPEN_STREAMS.dec()
        if not finished:
            _cut(client_socket)
        try:
            if body is None:
                response.close()
            else:
                body.release(finished, DRAIN_TIMEOUT)
        except (OSError, RuntimeError):
            pass


def _cut(client_socket):
    """Shut the client connection, so an early end is not taken for the whole audio."""
    if client_socket is None:
        return
    try:
        client_socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
