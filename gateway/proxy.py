"""Client addresses behind a reverse proxy: trust exactly the configured hops, from known proxies.

Werkzeug's ProxyFix trusts X-Forwarded-* from whoever sends them; here it applies
only when the direct peer is one of FORWARDED_ALLOW_IPS, so a client that reaches
the gateway directly cannot forge its address in the logs. Nothing is trusted by
default (PROXY_HOPS=0).
"""
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


def init_app(app):
    """Wrap the WSGI app when the configuration names proxy hops."""
    hops = app.config["PROXY_HOPS"]
    if hops > 0:
        app.wsgi_app = TrustedProxyFix(app.wsgi_app, hops, app.config["FORWARDED_ALLOW_IPS"])
