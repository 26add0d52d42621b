"""Deadlines on the client side of a request: reading its body, and writing the answer.

gunicorn's gevent worker waits as long as it takes for a request body to arrive and
for the client to take each write, so a key holder who sends slowly, or stops reading
a stream, would hold a worker connection and an upstream connection indefinitely.
This WSGI middleware bounds both:

- the whole request body must arrive within CLIENT_BODY_TIMEOUT (else 408), and a body
  the server cannot read (a broken or cut chunked framing) is the client's 400, never
  the gateway's 500. `DeadlineInput.finished` says whether the body was read to its
  end: an error answered before that (these two, or a 401 or 413 that never read it)
  closes the connection (gateway/errors.py), or the rest of the body would be read
  as the next request;
- each write of the answer (a stream's events and any other response) must be taken by
  the client within CLIENT_WRITE_TIMEOUT. One watchdog greenlet per worker looks at the
  writes in progress once a second (no timer per write: the stream relay is the hot
  path); a write past its deadline is interrupted with a broken pipe, which makes
  gunicorn close the connection quietly and close the response, which closes the
  upstream stream. The request's log line says `error: client_write_timeout`.

Deadlines need gevent (the production worker); elsewhere the middleware only maps
unreadable bodies to 400.
"""
import logging
import time

import gevent
from gevent import monkey

from gateway.errors import APIError, InvalidRequestError

try:  # the errors gunicorn raises for a broken chunked framing (a missing body raises OSError)
    from gunicorn.http.errors import ParseException as ServerParseError
except ImportError:  # another WSGI server
    ServerParseError = OSError

log = logging.getLogger(__name__)
UNREADABLE = (OSError, ValueError, ServerParseError)

STATS_KEY = "gateway.stats"  # the request's RequestStats, put in the environ by request_log


class ClientBodyTimeout(APIError):
    """The request body did not arrive in time (408)."""

    status = 408
    code = "request_timeout"


class ClientStalled(BrokenPipeError):
    """The client did not take a write within CLIENT_WRITE_TIMEOUT.

    A BrokenPipeError (EPIPE) so that gunicorn drops the connection without a traceback,
    as it does for any client that went away.
    """

    def __init__(self):
        super().__init__(32, "the client did not read the response in time")


class DeadlineInput:
    """`wsgi.input` that gives up at the body deadline and turns read failures into a 400.

    `finished` becomes true once the body was read to its end (all of its Content-Length,
    or the end of a chunked one); a read that failed or timed out never finishes it.
    """

    def __init__(self, stream, deadline, timeout, length=0, chunked=False):
        self.stream, self.deadline, self.timeout = stream, deadline, timeout
        self.left = None if chunked else length  # bytes still to come; None: until the end
        self.finished = not chunked and length <= 0

    def _took(self, data):
        if not data:
            self.finished = True
        elif self.left is not None:
            self.left -= len(data)
            self.finished = self.left <= 0
        return data

    def _call(self, method, *args):
        try:
            if self.deadline is None:
                return method(*args)
            remaining = self.deadline - time.monotonic()
            with gevent.Timeout(max(remaining, 0.001), False):
                return method(*args)
            raise ClientBodyTimeout(  # reached only when the Timeout left the block early
                f"The request body did not arrive within {self.timeout:g} seconds "
                "(CLIENT_BODY_TIMEOUT).")
        except UNREADABLE as exc:  # gunicorn's NoMoreData, InvalidChunkSize, ...
            log.info("unreadable request body: %s", type(exc).__name__)
            raise InvalidRequestError("The request body could not be read: its framing is "
                                      "broken or it was cut short.",
                                      code="invalid_request_body") from None

    def read(self, *args):
        return self._took(self._call(self.stream.read, *args))

    def readline(self, *args):
        return self._took(self._call(self.stream.readline, *args))

    def readlines(self, *args):
        lines = self._call(self.stream.readlines, *args)
        for line in lines or [b""]:
            self._took(line)
        return lines

    def __iter__(self):
        return iter(self.readline, b"")


class _Write:
    """One response being written: its greenlet, and since when its current write waits."""

    __slots__ = ("greenlet", "since", "environ")

    def __init__(self, greenlet, environ):
        self.greenlet, self.since, self.environ = greenlet, None, environ


class Watchdog:
    """Interrupts writes that waited longer than `timeout` (one greenlet per worker)."""

    def __init__(self, timeout, tick=1.0):
        self.timeout, self.tick = timeout, min(tick, timeout / 2)
        self.writes = set()
        self.runner = None

    def watch(self, environ):
        if self.runner is None or self.runner.dead:
            self.runner = gevent.spawn(self._run)
        entry = _Write(gevent.getcurrent(), environ)
        self.writes.add(entry)
        return entry

    def _run(self):
        while True:
            gevent.sleep(self.tick)
            now = time.monotonic()
            for entry in list(self.writes):
                since = entry.since
                if since is not None and now - since >= self.timeout:
                    gevent.get_hub().loop.run_callback(self._interrupt, entry, since)

    def _interrupt(self, entry, since):
        if entry.since != since or entry not in self.writes:
            return  # the write finished meanwhile
        self.writes.discard(entry)
        stats = entry.environ.get(STATS_KEY)
        if stats is not None:
            stats.error = "client_write_timeout"
        log.warning("client did not read the response within CLIENT_WRITE_TIMEOUT (%g s); "
                    "closing the connection and its upstream request", self.timeout,
                    extra={"fields": {"path": entry.environ.get("PATH_INFO"),
                                      "client": entry.environ.get("REMOTE_ADDR")}})
        entry.greenlet.throw(ClientStalled())


class _WatchedBody:
    """The response iterable, with each write's start time visible to the watchdog."""

    def __init__(self, result, entry, watchdog):
        self.result, self.entry, self.watchdog = result, entry, watchdog

    def __iter__(self):
        entry = self.entry
        for item in self.result:
            entry.since = time.monotonic()
            yield item
            entry.since = None

    def close(self):
        self.entry.since = None
        self.watchdog.writes.discard(self.entry)
        close = getattr(self.result, "close", None)
        if close is not None:
            close()


class ClientDeadlines:
    """WSGI middleware: body and write deadlines for every request."""

    def __init__(self, app, body_timeout, write_timeout):
        self.app, self.body_timeout = app, body_timeout
        self.cooperative = monkey.is_module_patched("socket")
        self.watchdog = Watchdog(write_timeout) if self.cooperative else None

    def __call__(self, environ, start_response):
        deadline = time.monotonic() + self.body_timeout if self.cooperative else None
        environ["wsgi.input"] = DeadlineInput(environ["wsgi.input"], deadline, self.body_timeout,
                                              _content_length(environ),
                                              "HTTP_TRANSFER_ENCODING" in environ)
        result = self.app(environ, start_response)
        if self.watchdog is None:
            return result
        return _WatchedBody(result, self.watchdog.watch(environ), self.watchdog)


def _content_length(environ):
    try:
        return int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:  # gunicorn refuses such a request before the app runs
        return 0


def init_app(app):
    """Wrap the app in the client deadlines of its configuration."""
    app.wsgi_app = ClientDeadlines(app.wsgi_app, app.config["CLIENT_BODY_TIMEOUT"],
                                   app.config["CLIENT_WRITE_TIMEOUT"])
