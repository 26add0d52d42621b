"""Closing a client connection after an answer, without losing the answer.

Two places answer a request and then must end its connection, because the request's
body was not read to its end and its bytes would otherwise be taken for the next
request: the app (a 408 for a body that came too slowly, a 400 for a broken chunked
framing, a 401 or 413 answered before the body was read; gateway/errors.py says
`Connection: close`), and gunicorn itself (a malformed request line or header,
gateway/ops/server_errors.py).

gunicorn drops a `Connection` header the app sets (it is hop-by-hop): `ClosingResponse`
makes gunicorn honour `Connection: close` from the app, so the head says it and
gunicorn ends the connection after the answer.

A plain close() with unread bytes in the socket's receive buffer makes the kernel send
a reset, and a client still sending its body (a 26 MiB upload past the limit) may then
lose the answer it was about to read. `linger()` closes the way nginx's lingering_close
does: end our side (the client sees the answer, then end of file), then read and drop
what the client still sends, for a bounded time, before the socket is closed.

`install()` runs in each gunicorn worker (gunicorn.conf.py, post_worker_init), after
gateway.ops.one_send has installed its Response class: it builds on whichever class
gunicorn uses.
"""
import socket
import time

from gunicorn.http import wsgi

LINGER_IDLE = 1.0  # seconds without a byte from the client before the socket is closed
LINGER_TOTAL = 5.0  # seconds at most spent dropping what a client still sends


def linger(sock, idle=LINGER_IDLE, total=LINGER_TOTAL):
    """End our side of `sock`, then drop what the client still sends (bounded)."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return  # the client is gone already
    deadline = time.monotonic() + total
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            sock.settimeout(min(idle, remaining))
            if not sock.recv(65536):
                return  # the client closed its side too
    except OSError:  # socket.timeout included: the client went quiet
        return


class HonoursConnectionClose:
    """Mixin for gunicorn's Response: the app's `Connection: close` ends the connection."""

    _linger = False

    def process_headers(self, headers):
        super().process_headers(headers)
        for name, value in headers:
            if name.lower() == "connection" and value.strip().lower() == "close":
                self.force_close()  # the head says `Connection: close`; gunicorn closes
                self._linger = True

    def close(self):
        super().close()
        if self._linger:
            linger(self.sock)


def install():
    """Make this worker's HTTP/1.1 responses honour the app's `Connection: close`."""
    base = wsgi.Response
    if not issubclass(base, HonoursConnectionClose):
        wsgi.Response = type("Closing" + base.__name__, (HonoursConnectionClose, base), {})
