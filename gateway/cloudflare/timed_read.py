"""Reading a stream's upstream socket under gevent: one timer per stream, not per read.

A gevent socket with a timeout makes every `recv` that has to wait first try the
system call (which fails: the next event is tens of milliseconds away), then build a
`Timeout` (an exception object and a libev timer), start it and cancel it. A stream
does that once per event. `TimedReader` keeps one timer per stream, armed for the
earliest moment the relay asked to be woken at, and leaves it running across reads;
after a read that emptied the socket it waits for readability before calling `recv`.
So a read costs one wait on the socket's read watcher and one `recv`.

When the timer fires it looks at when the latest read wants to be woken: if that is
later (data came meanwhile), it re-arms itself for then without waking anyone, so a
read is woken when its own timeout is due, as with the socket's timeout, at the cost
of one timer start per timeout period instead of one per read. Outside gevent (unit
tests, a threaded server) `SocketBody` uses the socket's own timeout instead.
"""
import ssl
import time

from gevent import get_hub, getcurrent
from gevent.socket import socket as GeventSocket

SLACK = 0.005  # seconds: an armed timer due this much later than asked is still good


class _Due(Exception):
    """Thrown into a waiting reader by its timer."""


def usable(sock):
    """Whether `sock` is a gevent socket (the worker is monkey-patched)."""
    return isinstance(sock, GeventSocket)


class TimedReader:
    """`recv(size, timeout)` on a gevent socket or TLS socket with one timer per stream."""

    def __init__(self, sock):
        self.sock = sock
        self.previous_timeout = sock.gettimeout()
        sock.settimeout(0.0)  # gevent's recv now raises instead of waiting: this class waits
        self.hub = get_hub()
        self.watcher = self.hub.loop.io(sock.fileno(), 1)
        # TLS can hold decrypted bytes while the descriptor is not readable: always try first.
        self.try_first = isinstance(sock, ssl.SSLSocket)
        self.timer = None
        self.due_at = 0.0  # when the timer fires
        self.wanted_at = 0.0  # when the latest waiting read wants to be woken at the latest
        self.waiting = None  # the greenlet waiting for the socket, while it waits

    def recv(self, size, timeout):
        """Up to `size` bytes; TimeoutError when the timer fired first (maybe early)."""
        if self.try_first:
            data = self._try(size)
            if data is not None:
                return data
        while True:
            self._wait(timeout)
            data = self._try(size)
            if data is not None:
                return data

    def _try(self, size):
        try:
            return self.sock.recv(size)
        except (BlockingIOError, ssl.SSLWantReadError):
            return None

    def _wait(self, timeout):
        self._arm(timeout)
        self.waiting = getcurrent()
        try:
            self.hub.wait(self.watcher)
        except _Due:
            raise TimeoutError("no upstream bytes before the relay's next check") from None
        finally:
            self.waiting = None

    def _arm(self, timeout):
        """Make sure the timer fires no later than `timeout` seconds from now."""
        due = self.wanted_at = time.monotonic() + timeout
        timer = self.timer
        if timer is not None and timer.active:
            if self.due_at <= due + SLACK:
                return
            timer.stop()
        self._start(timeout, due)

    def _start(self, timeout, due):
        self.timer = timer = self.hub.loop.timer(max(timeout, 0.001), ref=False)
        self.due_at = due
        timer.start(self._fire)

    def _fire(self):
        """Wake the waiting read when it is due; when reads since asked for later, wait on.

        At one event per 200 ms and a 1 s timeout, waking every read the timer caught
        would add a wake-up (an exception, a look at the clocks) for every fifth event.
        """
        now = time.monotonic()
        if self.wanted_at > now + SLACK:
            self._start(self.wanted_at - now, self.wanted_at)
        elif self.waiting is not None:
            self.waiting.throw(_Due())

    def close(self):
        """Stop the watchers; the socket gets its timeout back (it may return to the pool)."""
        if self.timer is not None:
            self.timer.stop()
            self.timer.close()
        self.watcher.close()
        try:
            self.sock.settimeout(self.previous_timeout)
        except OSError:
            pass
