"""Client addresses behind a reverse proxy: trust exactly the configured hops, from known proxies.

Werkzeug's ProxyFix trusts X-Forwarded-* from whoever sends them; here it applies
only when the direct peer is one of FORWARDED_ALLOW_IPS, so a client that reaches
the gateway directly cannot forge its address in the logs. Nothing is trusted by
default (PROXY_HOPS=0).
"""
import re

from werkzeug.middleware.proxy_fix import ProxyFix


class TrustedProxyFix(ProxyFix):
    """ProxyFix for requests whose peer is a trusted proxy; others pass untouched."""

    def __init__(self, app, hops, allowed):
        super().__init__(app, x_for=hops, x_proto=hops)
        self.allowed = frozenset(allowed)

    def __call__(self, environ, start_response):
        if "*" in self.allowed or environ.get("REMOTE_ADDR") in self.allowed:
            return super().__call__(environ, start_response)
        return self.app(environ, start_response)


class MergeSlashes:
    """Serve `/v1//models` as `/v1/models`.

    A base URL configured with a trailing slash makes some clients request doubled
    slashes; Werkzeug would answer those with a 308 redirect, which SDKs do not follow
    for a POST.
    """

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if "//" in path:
            environ["PATH_INFO"] = re.sub("/{2,}", "/", path)
        return self.app(environ, start_response)


def init_app(app):
    """Merge doubled slashes; trust proxy headers when the configuration names hops."""
    app.wsgi_app = MergeSlashes(app.wsgi_app)
    hops = app.config["PROXY_HOPS"]
    if hops > 0:
        app.wsgi_app = TrustedProxyFix(app.wsgi_app, hops, app.config["FORWARDED_ALLOW_IPS"])
