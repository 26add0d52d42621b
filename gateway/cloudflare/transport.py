"""requests' pooled adapter, trimmed to what the Cloudflare client uses.

Every upstream call goes through `HTTPAdapter.send` (so tests can stand in for
Cloudflare with `responses`), but per call the stock adapter and urllib3 also:

* send the request head and its JSON body in two `send()` calls (urllib3 sets
  TCP_NODELAY, so two packets, and Cloudflare's side wakes up twice);
* check a pooled connection with a zero-timeout `poll()` before reusing it, which under
  gevent is not a system call but a round trip through the hub: watchers set up, a
  timer started and expired, two greenlet switches;
* find the connection pool again from the URL, and fill a cookie jar nobody reads;
* parse the response head with the `email` package (response_head.py).

Here the head and body leave in one `send()` (one system call:
`gateway.ops.fast_send`), the liveness check uses the real
`poll()` (zero timeout: it never blocks the hub), the pool is remembered per
scheme, host and TLS settings, and no cookies are kept (Cloudflare sets none the
gateway should replay). Measured in bench/RESULTS.md.
"""
import http.client
import re
import select

import urllib3
from gevent import monkey
from requests.adapters import HTTPAdapter
from requests.models import Response
from urllib3.connection import HTTPConnection, HTTPSConnection, _ResponseOptions
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from gateway.cloudflare.response_head import FastHTTPResponse
from gateway.ops.fast_send import sendall

# What the direct path writes (everything else takes urllib3's path): methods, a request
# target without spaces or controls, token header names, values without CR, LF or NUL,
# and a host name or IPv4 address (an IPv6 literal or IDNA name takes urllib3's path).
PLAIN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # urllib3 says Content-Length: 0 for these
MANAGED = frozenset({"host", "transfer-encoding"})
_SAFE_TARGET = re.compile(r"[!-~]+")
_SAFE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SAFE_VALUE = re.compile(r"[^\r\n\x00]*")
_USER_AGENT = f"python-urllib3/{urllib3.__version__}"  # what urllib3 sends by default


def _plain_host(host):
    return host.isascii() and ":" not in host


# The real poll, even under gevent: with a zero timeout it answers at once.
_poll = monkey.get_original("select", "poll")


def readable_now(sock):
    """Whether `sock` has something to read (or was closed) right now, without waiting."""
    poller = _poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class OneSendConnection(HTTPConnection):
    """A connection that writes a request's head and bytes body in one `send()`.

    The gateway's own requests (a bytes body or none, its own plain headers, a path
    without spaces or controls) are written straight to the socket in the bytes urllib3
    would write, without http.client's header-by-header state machine. Anything else
    goes through urllib3 as usual, with the head held back for a bytes body.
    """

    response_class = FastHTTPResponse  # the head read without the email package
    _holding = False
    _head = None

    def request(self, method, url, body=None, headers=None, **kwargs):
        if self._direct(method, url, body, headers, kwargs):
            return self._request_at_once(method, url, body, headers, kwargs)
        # http.client sends the head (its first send) from endheaders(), then urllib3 the
        # body: hold the head for the body's send when the body is bytes.
        self._holding = isinstance(body, bytes) and bool(body)
        try:
            return super().request(method, url, body=body, headers=headers, **kwargs)
        finally:
            self._holding, self._head = False, None

    def _direct(self, method, url, body, headers, options):
        return (method in PLAIN_METHODS and (body is None or type(body) is bytes)
                and headers is not None and not options.get("chunked")
                and self._tunnel_host is None and self.__class__.default_port is not None
                and _SAFE_TARGET.fullmatch(url) is not None and _plain_host(self.host)
                and all(_SAFE_NAME.fullmatch(name) and name.lower() not in MANAGED
                        and isinstance(value, str) and _SAFE_VALUE.fullmatch(value)
                        for name, value in headers.items()))

    def _request_at_once(self, method, url, body, headers, options):
        """What urllib3's `request()` sends for these arguments, in one `send()`."""
        if self.sock is None:
            self.connect()  # as http.client's first send() would (errors as urllib3's)
        self.sock.settimeout(self.timeout)
        self._response_options = _ResponseOptions(
            request_method=method, request_url=url,
            preload_content=options.get("preload_content", True),
            decode_content=options.get("decode_content", True),
            enforce_content_length=options.get("enforce_content_length", True))
        # http.client's bookkeeping of putrequest() and endheaders(): one request at a time.
        previous = self._HTTPConnection__response
        if previous is not None and previous.isclosed():
            self._HTTPConnection__response = None
        if self._HTTPConnection__state != http.client._CS_IDLE:
            raise http.client.CannotSendRequest(self._HTTPConnection__state)
        self._method = method
        host = self.host if self.port == self.default_port else f"{self.host}:{self.port}"
        lines = [f"{method} {url} HTTP/1.1", f"Host: {host}"]
        names = {name.lower() for name in headers}
        if "accept-encoding" not in names:
            lines.append("Accept-Encoding: identity")
        if "content-length" not in names and "transfer-encoding" not in names and (
                body is not None or method in BODY_METHODS):
            lines.append(f"Content-Length: {len(body or b'')}")
        if "user-agent" not in names:
            lines.append(f"User-Agent: {_USER_AGENT}")
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._HTTPConnection__state = http.client._CS_REQ_SENT
        sendall(self.sock, head + body if body else head)

    def send(self, data):
        if self._holding:
            self._holding, self._head = False, data
            return
        if self._head is not None:
            data, self._head = self._head + data, None
        if self.sock is not None and isinstance(data, bytes):
            sendall(self.sock, data)  # one system call where gevent's sendall makes two
            return
        super().send(data)

    @property
    def is_connected(self):
        """urllib3 asks before reusing a pooled connection: not readable means still open."""
        return self.sock is not None and not readable_now(self.sock)


class OneSendHTTPSConnection(OneSendConnection, HTTPSConnection):
    """The same over TLS."""


class Pool(HTTPConnectionPool):
    ConnectionCls = OneSendConnection


class TLSPool(HTTPSConnectionPool):
    ConnectionCls = OneSendHTTPSConnection


class CloudflareAdapter(HTTPAdapter):
    """HTTPAdapter with the connection classes above, a remembered pool and no cookies."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": TLSPool}
        self._pools = {}

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        scheme, _, host = request.url.partition("://")
        key = (scheme, host.split("/", 1)[0], verify if isinstance(verify, str) else bool(verify),
               cert if isinstance(cert, str) or cert is None else tuple(cert))
        pool = self._pools.get(key)
        if pool is None or pool.pool is None:  # none yet, or closed
            pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
            self._pools[key] = pool
        return pool

    def build_response(self, req, resp):
        response = Response()
        response.status_code = getattr(resp, "status", None)
        response.headers = resp.headers  # urllib3's HTTPHeaderDict: already case-insensitive
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url
        response.request = req
        response.connection = self
        return response

    def close(self):
        self._pools.clear()
        super().close()
