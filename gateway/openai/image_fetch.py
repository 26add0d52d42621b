"""Fetch an `http(s)` image for a vision model, safely, and inline it as a data URL.

Workers AI takes images as data only ("HTTP URL will not be accepted" in the vision
models' schemas), so with `IMAGE_FETCH=1` the gateway downloads them itself. A gateway
that fetches URLs chosen by its clients must not become a way into the network it runs
in (SSRF): only http and https, no address in a loopback, private, link-local,
multicast, reserved or otherwise non-public range (checked on the socket actually
connected, after DNS, so a name that resolves differently the second time gains
nothing), redirects followed by hand and checked the same way, image content types
only, a size cap and a deadline. Hosts in `IMAGE_FETCH_ALLOW_HOSTS` are the only ones
fetched when it is set, and the operator vouches for them (they may be internal).
"""
import base64
import ipaddress
import socket
import time
from urllib.parse import urljoin, urlsplit

import gevent
import urllib3
from gevent import monkey
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

MAX_REDIRECTS = 3
READ_SIZE = 65536
REDIRECTS = (301, 302, 303, 307, 308)


class ImageFetchError(Exception):
    """Why an image was not fetched (said to the client in a 400)."""


class BlockedAddress(Exception):
    """The connection reached an address the gateway must not talk to."""


def is_public(address):
    """Whether an IP address is a public unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local
                                 or ip.is_multicast or ip.is_reserved or ip.is_unspecified)


class _CheckedConnection:
    """Refuses the socket once connected when its peer is not a public address."""

    def _new_conn(self):
        sock = super()._new_conn()
        address = sock.getpeername()[0]
        if not is_public(address):
            sock.close()
            raise BlockedAddress(address)
        return sock


class CheckedHTTPConnection(_CheckedConnection, HTTPConnection):
    pass


class CheckedHTTPSConnection(_CheckedConnection, HTTPSConnection):
    pass


class CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = CheckedHTTPConnection


class CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = CheckedHTTPSConnection


class ImageFetcher:
    """`fetch(url)` -> `data:<type>;base64,...`, or ImageFetchError saying why not."""

    def __init__(self, max_bytes, timeout, allow_hosts=()):
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.allow_hosts = {h.lower() for h in allow_hosts}

    def fetch(self, url):
        deadline = time.monotonic() + self.timeout
        error = ImageFetchError(f"The image took longer than {self.timeout:g} s to fetch.")
        limit = gevent.Timeout(self.timeout, error) if monkey.is_module_patched("socket") \
            else None
        if limit is not None:
            limit.start()
        pools = []
        try:
            for _ in range(MAX_REDIRECTS + 1):
                response = self._get(url, deadline, pools)
                if response.status not in REDIRECTS:
                    return self._data_url(response, deadline)
                location = response.headers.get("Location")
                response.release_conn()
                if not location:
                    raise ImageFetchError("The image URL redirected nowhere.")
                url = urljoin(url, location)
            raise ImageFetchError("The image URL redirected too many times.")
        finally:
            for pool in pools:
                pool.close()
            if limit is not None:
                limit.close()

    def _get(self, url, deadline, pools):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImageFetchError("Only http and https image URLs can be fetched.")
        host = parts.hostname.lower()
        trusted = host in self.allow_hosts
        if self.allow_hosts and not trusted:
            raise ImageFetchError(f"The host {host} is not in IMAGE_FETCH_ALLOW_HOSTS.")
        if not trusted:
            self._precheck(host, parts.port or (443 if parts.scheme == "https" else 80))
        https = parts.scheme == "https"
        if trusted:
            pool_class = HTTPSConnectionPool if https else HTTPConnectionPool
        else:
            pool_class = CheckedHTTPSPool if https else CheckedHTTPPool
        remaining = max(deadline - time.monotonic(), 0.001)
        pool = pool_class(host, parts.port, maxsize=1, retries=False,
                          timeout=urllib3.Timeout(connect=remaining, read=remaining))
        pools.append(pool)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            return pool.urlopen("GET", path, headers={"Accept": "image/*",
                                                      "User-Agent": "cf-ai-endpoint"},
                                redirect=False, preload_content=False, retries=False)
        except BlockedAddress:
            raise ImageFetchError("The image URL points to a private or reserved address, "
                                  "which the gateway does not fetch.") from None
        except urllib3.exceptions.HTTPError as exc:
            raise ImageFetchError(f"The image could not be fetched ({type(exc).__name__}).") \
                from None

    @staticmethod
    def _precheck(host, port):
        """Refuse at once a host whose addresses are not public (the connection is checked
        again on the address it reaches, which is what counts)."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise ImageFetchError(f"The image host {host} could not be resolved.") from None
        if not infos or not all(is_public(info[4][0]) for info in infos):
            raise ImageFetchError("The image URL points to a private or reserved address, "
                                  "which the gateway does not fetch.")

    def _data_url(self, response, deadline):
        try:
            if response.status != 200:
                raise ImageFetchError(f"The image URL answered HTTP {response.status}.")
            mime = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if not mime.startswith("image/"):
                raise ImageFetchError(f"The URL is not an image (content type {mime!r}).")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise self._too_large()
            data = bytearray()
            while chunk := response.read(READ_SIZE):
                data += chunk
                if len(data) > self.max_bytes:
                    raise self._too_large()
                if time.monotonic() > deadline:
                    raise ImageFetchError(f"The image took longer than {self.timeout:g} s "
                                          "to fetch.")
            return f"data:{mime};base64,{base64.b64encode(bytes(data)).decode()}"
        except urllib3.exceptions.HTTPError as exc:
            raise ImageFetchError(f"The image could not be read ({type(exc).__name__}).") \
                from None
        finally:
            response.release_conn()
            response.close()

    def _too_large(self):
        return ImageFetchError(f"The image is larger than {self.max_bytes} bytes "
                               "(IMAGE_FETCH_MAX_BYTES).")
