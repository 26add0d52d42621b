"""requests' pooled adapter, trimmed to what the Cloudflare client uses.

Every upstream call goes through `HTTPAdapter.send` (so tests can stand in for
Cloudflare with `responses`), but per call the stock adapter and urllib3 also:

* send the request head and its JSON body in two `send()` calls (urllib3 sets
  TCP_NODELAY, so two packets, and Cloudflare's side wakes up twice);
* check a pooled connection with a zero-timeout `poll()` before reusing it, which under
  gevent is not a system call but a round trip through the hub: watchers set up, a
  timer started and expired, two greenlet switches;
* find the connection pool again from the URL, and fill a cookie jar nobody reads.

Here the head and body leave in one `send()`, the liveness check uses the real
`poll()` (zero timeout: it never blocks the hub), the pool is remembered per
scheme, host and TLS settings, and no cookies are kept (Cloudflare sets none the
gateway should replay). Measured in bench/RESULTS.md.
"""
import select

from gevent import monkey
from requests.adapters import HTTPAdapter
from requests.models import Response
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

# The real poll, even under gevent: with a zero timeout it answers at once.
_poll = monkey.get_original("select", "poll")


def readable_now(sock):
    """Whether `sock` has something to read (or was closed) right now, without waiting."""
    poller = _poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class OneSendConnection(HTTPConnection):
    """A connection that sends the request head together with a bytes body."""

    _holding = False
    _head = None

    def request(self, method, url, body=None, headers=None, **kwargs):
        # http.client sends the head (its first send) from endheaders(), then urllib3 the
        # body: hold the head for the body's send when the body is bytes.
        self._holding = isinstance(body, bytes) and bool(body)
        try:
            return super().request(method, url, body=body, headers=headers, **kwargs)
        finally:
            self._holding, self._head = False, None

    def send(self, data):
        if self._holding:
            self._holding, self._head = False, data
            return
        if self._head is not None:
            data, self._head = self._head + data, None
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
