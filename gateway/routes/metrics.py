"""GET /metrics in Prometheus text format, for the operator only.

Metrics name models and show traffic. With METRICS_TOKEN set, a scraper anywhere
presents it as a bearer token and nobody reads them without it; without a token only
the addresses in METRICS_ALLOW_IPS (default loopback: a scraper on the same host, or an
SSH tunnel) may read them. Behind a reverse proxy on the same host every request
comes from loopback, so deploy/nginx.conf does not pass /metrics on, and PROXY_HOPS
makes the address the client's own. `/readyz` shows its reasons to the same audience
(`operator_access`).
"""
import hmac
import ipaddress
from functools import lru_cache

from flask import Blueprint, Response, current_app, request

from gateway.errors import APIError, AuthenticationError
from gateway.ops import metrics

bp = Blueprint("metrics", __name__)


@lru_cache(maxsize=16)
def _networks(allowed):
    """METRICS_ALLOW_IPS as networks (a plain address is a network of one)."""
    return tuple(ipaddress.ip_network(item, strict=False) for item in allowed)


def _from_allowed_address():
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    return any(address in network
               for network in _networks(tuple(current_app.config["METRICS_ALLOW_IPS"])))


def _token_presented():
    token = current_app.config["METRICS_TOKEN"]
    if not token:
        return False
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(),
                                                              token.encode())


def operator_access():
    """Whether this request may see operational details such as readiness reasons."""
    return _from_allowed_address() or _token_presented()


@bp.get("/metrics")
def scrape():
    """The gateway's metrics, merged over all gunicorn workers."""
    if current_app.config["METRICS_TOKEN"]:
        if not _token_presented():
            raise AuthenticationError("A valid METRICS_TOKEN is needed for /metrics.",
                                      headers={"WWW-Authenticate": "Bearer"})
    elif not _from_allowed_address():
        raise APIError("/metrics is readable only from the addresses in METRICS_ALLOW_IPS, or "
                       "with METRICS_TOKEN.", status=403, code="forbidden")
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)
