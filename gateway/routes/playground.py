"""The playground: one page at `/` and `/playground` to try the gateway in a browser.

Plain HTML, CSS and JavaScript shipped in `gateway/playground/` (no build step, nothing
loaded from another host, so it works offline). The page and its files need no key: the
person types one, the page keeps it in `sessionStorage` and sends it with each API call
it makes, exactly like any other client. `PLAYGROUND=0` turns all of it into 404s.

Caching: the page itself is revalidated on every load (ETag, `no-cache`); it links its
files with `?v=<hash of their contents>`, so those can be cached for a year and a new
release is still picked up at once. A file asked for without that hash is revalidated.

Security: a Content-Security-Policy that allows only the page's own origin (no inline
script or style, no other host, not framable) on the page and its files only; API
responses are JSON and carry none.
"""
import hashlib
from pathlib import Path

from flask import Blueprint, abort, current_app, make_response, request, send_from_directory

from gateway.auth import public

bp = Blueprint("playground", __name__)

FILES = Path(__file__).resolve().parents[1] / "playground"
ONE_YEAR = 365 * 24 * 3600
CONTENT_SECURITY_POLICY = ("default-src 'self'; base-uri 'none'; object-src 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")


def _asset_version():
    """A short hash of every file the page links, so their URLs change with their contents."""
    digest = hashlib.sha256()
    for path in sorted(FILES.iterdir()):
        if path.is_file() and path.name != "index.html":
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


ASSET_VERSION = _asset_version()
PAGE = (FILES / "index.html").read_text(encoding="utf-8").replace("__ASSET_VERSION__",
                                                                  ASSET_VERSION)


def _secure(response):
    """The page's own security headers (never set on API responses)."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _require_enabled():
    if not current_app.config["PLAYGROUND"]:
        abort(404)


@bp.get("/")
@bp.get("/playground")
@public
def page():
    """The playground page, revalidated on each load."""
    _require_enabled()
    response = make_response(PAGE)
    response.mimetype = "text/html"
    response.cache_control.no_cache = True
    response.add_etag()
    return _secure(response.make_conditional(request))


@bp.get("/playground/static/<path:filename>")
@public
def asset(filename):
    """A file of the page: cached for a year under its versioned URL, revalidated otherwise."""
    _require_enabled()
    if filename == "index.html":
        abort(404)  # served (with its version filled in) by `page` only
    versioned = request.args.get("v") == ASSET_VERSION
    response = send_from_directory(FILES, filename, max_age=ONE_YEAR if versioned else None)
    if versioned:
        response.cache_control.immutable = True
    return _secure(response)
