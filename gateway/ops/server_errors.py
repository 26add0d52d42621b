"""The errors gunicorn answers itself, in OpenAI's error envelope instead of an HTML page.

A request gunicorn cannot parse (a malformed request line, an invalid method or HTTP
version, a header line too long, too many headers, an invalid header, a broken chunked
framing) never reaches the app: gunicorn's worker answers it in `handle_error` with
`gunicorn.util.write_error`, an HTML page. OpenAI's SDKs and every other client of the
gateway expect `{"error": {"message", "type", "param", "code"}}` from every answer, so
here gunicorn's status is kept and the body is that envelope.

The message is the gateway's own sentence for the kind of error, never gunicorn's text:
that quotes the bytes the client sent (a header line may carry a key). For the same
reason gunicorn's warning line names the kind of error (its code), not the bytes. The connection
is closed after the answer (gunicorn always does), by gateway.ops.closing.linger, so
a client still sending does not lose the answer to a reset.

`install(worker)` runs in each gunicorn worker (gunicorn.conf.py, post_worker_init).
gunicorn has no hook for this answer: the worker's `handle_error` is wrapped to note
which exception it answers, and `gunicorn.util.write_error`, which it calls, is replaced.
"""
import contextvars
import logging

import orjson
from gunicorn import util
from gunicorn.http import errors

from gateway.ops.closing import linger

INVALID = "invalid_request_error"

# (gunicorn's exception, code, message); the first class the error is an instance of wins.
# The limits name gunicorn's settings, for the operator a client may ask.
KINDS = (
    (errors.InvalidRequestLine, "invalid_http_request",
     "The request line is not valid HTTP/1.1 (expected `METHOD /path HTTP/1.1`)."),
    (errors.InvalidRequestMethod, "invalid_http_method", "The request's HTTP method is not valid."),
    (errors.InvalidHTTPVersion, "invalid_http_version",
     "The request's HTTP version is not supported (use HTTP/1.1 or HTTP/1.0)."),
    (errors.LimitRequestLine, "request_line_too_long",
     "The request line is longer than the server accepts (limit_request_line: {line} bytes)."),
    (errors.ObsoleteFolding, "invalid_header",
     "A request header is folded over several lines, which HTTP/1.1 no longer allows."),
    (errors.InvalidHeaderName, "invalid_header", "A request header's name is not valid."),
    (errors.InvalidHeader, "invalid_header",
     "A request header is not valid (its syntax, or a conflicting Content-Length or "
     "Transfer-Encoding)."),
    (errors.InvalidSchemeHeaders, "invalid_header",
     "The request's forwarded-scheme headers contradict each other."),
    (errors.UnsupportedTransferCoding, "unsupported_transfer_coding",
     "The request's Transfer-Encoding is not supported (only chunked is)."),
    (errors.ExpectationFailed, "expectation_failed",
     "The request's Expect header cannot be met (only 100-continue can)."),
    ((errors.InvalidChunkSize, errors.ChunkMissingTerminator, errors.InvalidChunkExtension),
     "invalid_request_body",
     "The request body could not be read: its chunked framing is broken."),
    (errors.ForbiddenProxyRequest, "forbidden", "Requests from this address are not accepted."),
)

# LimitRequestHeaders: gunicorn's own words tell which limit was hit.
HEADER_LIMITS = {
    "limit request headers fields": "The request has more headers than the server accepts "
                                    "(limit_request_fields: {fields}).",
    "limit request headers fields size": "A request header line is longer than the server "
                                         "accepts (limit_request_field_size: {field_size} bytes).",
}
HEADERS_TOO_LARGE = "The request's headers are larger than the server accepts."

_answering = contextvars.ContextVar("answering", default=None)  # the exception, per greenlet


def describe(exc, limits):
    """(code, message) for a gunicorn request error, without the client's bytes."""
    if isinstance(exc, errors.LimitRequestHeaders):
        return ("request_header_fields_too_large",
                HEADER_LIMITS.get(str(exc), HEADERS_TOO_LARGE).format(**limits))
    for kind, code, message in KINDS:
        if isinstance(exc, kind):
            return code, message.format(**limits)
    return "invalid_http_request", "The request is not valid HTTP."


def envelope(status, exc, limits):
    """The OpenAI error envelope for the status gunicorn chose and the error it answers."""
    if status >= 500 and status != 501:  # a failure of ours (gunicorn logs the traceback)
        return {"error": {"message": "The server had an error while processing your request.",
                          "type": "server_error", "param": None, "code": "internal_error"}}
    code, message = describe(exc, limits)
    return {"error": {"message": message, "type": INVALID, "param": None, "code": code}}


class WithoutClientBytes(logging.Filter):
    """gunicorn's `Invalid request from ip=...: <the bytes sent>` warning, without the bytes."""

    PREFIX = "Invalid request from ip="

    def __init__(self, limits):
        super().__init__()
        self.limits = limits

    def filter(self, record):
        exc = _answering.get()
        if exc is not None and isinstance(record.msg, str) and record.msg.startswith(self.PREFIX):
            ip = record.msg[len(self.PREFIX):].split(": ", 1)[0]
            record.msg, record.args = "Invalid request from ip=%s: %s", (
                ip, describe(exc, self.limits)[0])
        return True


def json_error_writer(limits):
    """A replacement for gunicorn.util.write_error that answers JSON."""

    def write_error(sock, status_int, reason, mesg):
        body = orjson.dumps(envelope(status_int, _answering.get(), limits))
        head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        sock.sendall(head.encode("latin-1") + body)
        linger(sock)

    return write_error


def install(worker):
    """Answer this worker's own request errors in OpenAI's envelope."""
    cfg = worker.cfg
    limits = {"line": cfg.limit_request_line, "fields": cfg.limit_request_fields,
              "field_size": cfg.limit_request_field_size}
    handle_error = worker.handle_error

    def noting_handle_error(req, client, addr, exc):
        token = _answering.set(exc)
        try:
            return handle_error(req, client, addr, exc)
        finally:
            _answering.reset(token)

    worker.handle_error = noting_handle_error
    worker.log.error_log.addFilter(WithoutClientBytes(limits))
    util.write_error = json_error_writer(limits)
