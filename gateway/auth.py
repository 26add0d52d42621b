"""Client keys: `Authorization: Bearer <key>` checked against every configured key.

Runs before every request. CORS preflights, the public health routes and views marked
with `@public` (the playground page, which loads before anyone has typed a key) need no
key; everything else, unknown routes included, does, so the gateway reveals nothing to a
caller without one. Keys are compared in constant time and never echoed or logged.
"""
import hashlib
import hmac

from flask import current_app, g, request

from gateway.errors import AuthenticationError

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})


def key_label(key):
    """A short, non-reversible label for a key, safe for logs."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def public(view):
    """Mark a view function as reachable without a key."""
    view.public = True
    return view


def _is_public_view():
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    return getattr(view, "public", False)


def _presented_key():
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


def _matches(presented, keys):
    """Constant-time comparison against every key (no early exit on a match)."""
    presented_bytes = presented.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(presented_bytes, key.encode())
    return found


def require_key():
    """before_request hook: 401 unless the request carries a configured key."""
    if request.method == "OPTIONS" or request.path in PUBLIC_PATHS or _is_public_view():
        return None
    if request.path == "/metrics":
        return None  # guarded by METRICS_TOKEN in its own route
    presented = _presented_key()
    keys = current_app.config["API_KEYS"]
    if presented is None:
        raise AuthenticationError(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": "Bearer"})
    if not keys or not _matches(presented, keys):
        raise AuthenticationError("Incorrect API key provided.",
                                  headers={"WWW-Authenticate": "Bearer"})
    g.key_label = key_label(presented)
    g.key_hash = hashlib.sha256(presented.encode()).hexdigest()  # owner of stored objects
    return None


def init_app(app):
    """Install the key check for every route."""
    app.before_request(require_key)
