"""Client keys: `Authorization: Bearer <key>`, one of API_KEYS or a key kept in the state store.

Runs before every request. CORS preflights, the public health routes and views marked
with `@public` (the playground page, which loads before anyone has typed a key) need no
key; `/metrics` and (with ADMIN_TOKEN set) `/admin` check their own tokens; everything
else, unknown routes included, needs a client key, so the gateway reveals nothing to a
caller without one. API_KEYS are compared in constant time and are unlimited, as they
always were. A stored key (`sk-cf-`) is looked up by its SHA-256 (gateway.state.keys),
must not have expired, and then passes the per-key model and limit check
(gateway.state.guard) on model requests; a malformed one, or one the store did not know a
few seconds ago, is refused without a store lookup (KeyRing). Keys are never echoed or
logged: logs carry a short hash label and the stored key's name.
"""
import hashlib
import hmac

from flask import current_app, g, request

from gateway.errors import AuthenticationError
from gateway.state import StoreUnavailable, guard
from gateway.state.keys import PREFIX, KeyRing, Principal, digest, well_formed

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


def _incorrect():
    return AuthenticationError("Incorrect API key provided.",
                               headers={"WWW-Authenticate": "Bearer"})


def _stored_principal(presented, label):
    """The stored key's Principal; 401 when unknown or expired, 503 when unverifiable now.

    On a model request (`POST /v1/...`) the remembered record is enough here, since the
    admission that follows checks in the same store call that the key still exists; any
    other request asks the store, so a revoked key stops working at once everywhere.
    """
    if not well_formed(presented):
        raise _incorrect()  # no key the gateway made: the store is not asked
    ring = current_app.extensions["keyring"]
    admitted_next = request.method == "POST" and request.path.startswith("/v1/")
    try:
        principal = ring.find(digest(presented), label, fresh=not admitted_next)
    except StoreUnavailable:
        raise guard.unverifiable() from None
    if principal is None:
        raise _incorrect()
    if principal.expired():
        raise AuthenticationError("This API key has expired.",
                                  headers={"WWW-Authenticate": "Bearer"})
    return principal


def require_key():
    """before_request hook: 401 unless the request carries a valid client key."""
    if request.method == "OPTIONS" or request.path in PUBLIC_PATHS or _is_public_view():
        return None
    if request.path == "/metrics":
        return None  # guarded by METRICS_TOKEN in its own route
    if current_app.config["ADMIN_TOKEN"] and (request.path == "/admin"
                                              or request.path.startswith("/admin/")):
        return None  # guarded by ADMIN_TOKEN in its blueprint (without it: unknown routes)
    presented = _presented_key()
    if presented is None:
        raise AuthenticationError(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": "Bearer"})
    label = key_label(presented)
    if _matches(presented, current_app.config["API_KEYS"]):
        g.principal = Principal(label=label)
    elif presented.startswith(PREFIX):
        g.principal = _stored_principal(presented, label)
    else:
        raise _incorrect()
    g.key_label = label  # only an accepted key is labelled in the log
    g.key_hash = digest(presented)  # owner of stored objects (gateway.state.responses)
    return None


def init_app(app):
    """Install the key check, then the per-key model and limit check, for every route."""
    app.extensions["keyring"] = KeyRing(app.extensions["state"])
    app.before_request(require_key)
    app.before_request(guard.limit_request)
    app.after_request(guard.settle_on_close)
