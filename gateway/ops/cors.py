"""CORS for the API routes only, with origins matched exactly (plus explicit `*.` wildcards).

flask-cors treats an origin string holding regex characters as a regular expression
matched at the start only, so `https://*.example.com` would also allow
`https://xexample.com.attacker.net`. Each configured origin is therefore compiled here
into an anchored pattern: exact origins match themselves only, and a leading `*.`
(`https://*.example.com`) matches one or more subdomain labels of that host, never the
host itself or anything after it. Anything else that looks like a pattern is refused at
start-up. `*` alone still allows every origin.

Operational routes (/metrics, /healthz, /readyz) get no CORS headers at all: a web page
in some visitor's browser has no business reading them.

flask-cors works its headers out again for every response (about 4% of a non-stream
request's time in bench/ profiles), though outside a preflight they depend only on the
path's resource, the request's Origin and its private-network header. The headers it
added are remembered per (path, Origin, that header) and added again as they are
(`remember_headers`); preflights and anything unusual still go through flask-cors.
"""
import re

from flask import request
from flask_cors import CORS
from flask_cors.core import ACL_ORIGIN

from gateway.state.limits import RATE_LIMIT_HEADERS

API_ROUTES = r"/v1/.*"
_ORIGIN = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<wild>\*\.)?"
                     r"(?P<host>[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
                     r"|\[[0-9a-f:.]+\])(?P<port>:\d{1,5})?", re.IGNORECASE)
_LABELS = r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+"


def origin_patterns(origins):
    """The CORS_ORIGINS values as flask-cors patterns: "*", or anchored regexes.

    Raises ValueError naming CORS_ORIGINS for a value that is not an origin.
    """
    if "*" in origins:
        return "*"
    patterns = []
    for origin in origins:
        match = _ORIGIN.fullmatch(origin)
        if match is None:
            raise ValueError(
                f"CORS_ORIGINS: {origin!r} is not an origin. Use exact origins such as "
                "https://app.example.com (scheme, host and optional port, no path), "
                "https://*.example.com for its subdomains, or * for any origin.")
        prefix = re.escape(f"{match['scheme']}://")
        host = re.escape(match["host"] + (match["port"] or ""))
        wild = _LABELS if match["wild"] else ""
        patterns.append(re.compile(f"{prefix}{wild}{host}\\Z", re.IGNORECASE))
    return patterns


# Request headers a page may send: ours, plus what OpenAI's JavaScript SDK adds in a browser
# (X-Stainless-Lang/-OS/-Retry-Count/..., OpenAI-Organization/-Project/-Beta); a preflight
# that leaves one out makes the browser refuse the call. Compiled patterns are matched
# from the start by flask-cors, so each one is anchored at the end.
ALLOW_HEADERS = ["Authorization", "Content-Type", "X-Request-ID",
                 re.compile(r"x-stainless-[a-z0-9-]+\Z", re.IGNORECASE),
                 re.compile(r"openai-(?:organization|project|beta)\Z", re.IGNORECASE)]


# At most this many (path, Origin, private-network) answers are remembered; past it, new
# ones are worked out by flask-cors each time (clients choose paths and origins).
REMEMBERED = 512


def remember_headers(cors_after_request):
    """`cors_after_request` (flask-cors' after_request hook), remembering what it adds."""
    remembered = {}

    def after_request(response):
        headers = response.headers
        if request.method == "OPTIONS" or ACL_ORIGIN in headers:
            return cors_after_request(response)
        environ = request.environ
        key = (request.path, environ.get("HTTP_ORIGIN"),
               environ.get("HTTP_ACCESS_CONTROL_REQUEST_PRIVATE_NETWORK"))
        added = remembered.get(key)
        if added is not None:
            headers.extend(added)
            return response
        before = len(headers)
        response = cors_after_request(response)
        if response.headers is headers and len(remembered) < REMEMBERED:
            remembered[key] = list(headers)[before:]
        return response

    return after_request


def init_app(app):
    """CORS headers on the /v1 routes for the configured origins; none elsewhere."""
    CORS(app, resources={API_ROUTES: {"origins": origin_patterns(app.config["CORS_ORIGINS"])}},
         methods=["GET", "POST", "DELETE", "OPTIONS"],
         allow_headers=ALLOW_HEADERS,
         expose_headers=["X-Request-ID", "Retry-After", *RATE_LIMIT_HEADERS], max_age=600)
    hooks = app.after_request_funcs[None]
    for i, hook in enumerate(hooks):
        if getattr(hook, "__name__", "") == "cors_after_request":
            hooks[i] = remember_headers(hook)
