"""`X-Request-ID` on every response: the client's own when it is sane, else a new one.

A client-sent id is echoed only when short and made of safe characters, so it can
go into logs and error messages without letting a caller inject text there.
"""
import re
import uuid

from flask import g, request

SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # used with fullmatch: no trailing newline


def assign_request_id():
    """before_request: pick the id for this request."""
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if SAFE_ID.fullmatch(incoming) else f"req_{uuid.uuid4().hex}"


def add_request_id_header(response):
    """after_request: echo the id (streams included: headers go out before the body)."""
    request_id = g.get("request_id")
    if request_id:
        response.headers["X-Request-ID"] = request_id
    return response


def init_app(app):
    """Install the hooks; the id is assigned before the key check so 401s carry it too."""
    app.before_request(assign_request_id)
    app.after_request(add_request_id_header)
