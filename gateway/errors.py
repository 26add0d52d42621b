"""OpenAI-shaped errors: the exception classes the gateway raises, rendered in one place.

Every error the client can see, including Flask's own 404/405/413 and unhandled
exceptions, leaves through `register_error_handlers` as
`{"error": {"message", "type", "param", "code"}}`, because the OpenAI SDKs parse
exactly that and pick their exception class (and retry policy) from the status.
"""
import logging

from flask import g, has_request_context, request
from werkzeug.exceptions import HTTPException

from gateway.jsonio import json_response

log = logging.getLogger(__name__)


class APIError(Exception):
    """Base of every error the gateway raises on purpose."""

    status = 400
    type = "invalid_request_error"
    code = None
    upstream_status = None  # Cloudflare's HTTP status, when the error came from Cloudflare
    cf_code = None  # Cloudflare's error code, likewise

    def __init__(self, message, *, param=None, code=None, status=None, headers=None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})

    def to_dict(self):
        """The OpenAI error envelope for this error."""
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}


class InvalidRequestError(APIError):
    """A request the gateway refuses before anything goes upstream (400)."""


class AuthenticationError(APIError):
    """Missing or unknown client key (401)."""

    status = 401
    code = "invalid_api_key"


class NotFoundError(APIError):
    """Unknown model or route (404)."""

    status = 404
    code = "model_not_found"


class RateLimitError(APIError):
    """Cloudflare capacity or rate limits (429, worth retrying)."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class QuotaExceededError(APIError):
    """The daily Workers AI allocation is used up (429, retrying is pointless)."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"

    def __init__(self, message, **kwargs):
        super().__init__(message, **kwargs)
        self.headers.setdefault("x-should-retry", "false")


class UpstreamError(APIError):
    """Cloudflare failed or answered something unusable (502)."""

    status = 502
    type = "api_error"
    code = "upstream_error"


class UpstreamTimeoutError(APIError):
    """Cloudflare did not answer in time (504)."""

    status = 504
    type = "api_error"
    code = "timeout"


class ServiceUnavailableError(APIError):
    """The gateway cannot serve now, e.g. Cloudflare is not configured (503)."""

    status = 503
    type = "api_error"
    code = "service_unavailable"


# Codes for Flask's own HTTP errors, so a client can tell them apart without parsing text.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large",
               411: "length_required", 400: "invalid_request"}


def _with_request_id(message):
    """Append the request id, so a user can quote it to the operator."""
    request_id = getattr(g, "request_id", None) if has_request_context() else None
    return f"{message} (request id: {request_id})" if request_id else message


def error_body(error):
    """The envelope the client sees for an APIError, request id included."""
    body = error.to_dict()
    body["error"]["message"] = _with_request_id(error.message)
    return body


def render_error(error):
    """The Flask response for an APIError (its upstream figures go to the request log).

    An error answered before the request body was read to its end (a 408 for a slow
    body, a 400 for a broken framing, a 401 or 413 that never read it) closes the
    connection: what is left of the body must not be read as the next request
    (gateway/ops/client_io.py tells, gateway/ops/closing.py closes).
    """
    headers = error.headers
    if has_request_context():
        stats = g.get("stats")
        if stats is not None and error.upstream_status is not None:
            stats.upstream_status, stats.cf_code = error.upstream_status, error.cf_code
        if not getattr(request.environ.get("wsgi.input"), "finished", True):
            headers = {**headers, "Connection": "close"}
    return json_response(error_body(error), error.status, headers)


def _render_http_exception(exc):
    """Flask's own errors (404, 405, 413, ...) in OpenAI's envelope, status kept."""
    status = exc.code or 500
    kind = "invalid_request_error" if status < 500 else "api_error"
    error = APIError(exc.description or exc.name, code=_HTTP_CODES.get(status), status=status)
    error.type = kind
    headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
    error.headers.update(headers)
    return render_error(error)


def _render_unexpected(exc):
    """Anything unplanned: a generic 500; the traceback goes to the log only."""
    if isinstance(exc, HTTPException):
        return _render_http_exception(exc)
    log.exception("unhandled error")
    error = APIError("The server had an error while processing your request.",
                     code="internal_error", status=500)
    error.type = "server_error"
    return render_error(error)


def _render_store_down(exc):
    """The state store did not answer where the gateway cannot do without it: 503, never 500."""
    return render_error(ServiceUnavailableError(
        "The gateway's state store is not answering; please retry shortly.",
        code="state_store_unavailable", headers={"Retry-After": "2"}))


def register_error_handlers(app):
    """Route every exception through the OpenAI envelope."""
    from gateway.state.store import StoreUnavailable
    app.register_error_handler(APIError, render_error)
    app.register_error_handler(StoreUnavailable, _render_store_down)
    app.register_error_handler(HTTPException, _render_http_exception)
    app.register_error_handler(Exception, _render_unexpected)
