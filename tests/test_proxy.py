"""Client addresses behind a reverse proxy (gateway/ops/proxy.py).

Table style after Werkzeug's test_proxy_fix: each row is (PROXY_HOPS,
FORWARDED_ALLOW_IPS, direct peer, headers) and the address and scheme the gateway
must see. They are read from a test route and from the request log line.
"""
import json
import logging

import pytest
from flask import jsonify, request

from gateway import create_app
from gateway.ops.request_log import JsonFormatter
from tests.conftest import KEY, SEARCH_URL, TestConfig, load_data

CLIENT = "203.0.113.7"
SPOOF = "6.6.6.6"
PROXY = "127.0.0.1"
STRANGER = "198.51.100.99"


def config(hops, allowed=("127.0.0.1", "::1")):
    return type("ProxyConfig", (TestConfig,), {"PROXY_HOPS": hops,
                                              "FORWARDED_ALLOW_IPS": list(allowed)})


def whoami_app(config_class):
    app = create_app(config_class)

    @app.get("/_test/whoami")
    def whoami():
        return jsonify(addr=request.remote_addr, scheme=request.scheme, host=request.host)

    return app


def seen(config_class, peer, headers):
    client = whoami_app(config_class).test_client()
    rv = client.get("/_test/whoami", headers={"Authorization": f"Bearer {KEY}", **headers},
                    environ_base={"REMOTE_ADDR": peer})
    assert rv.status_code == 200, rv.get_data(as_text=True)
    return rv.get_json()


@pytest.mark.parametrize("hops, allowed, peer, forwarded_for, expected", [
    pytest.param(0, ("127.0.0.1",), PROXY, CLIENT, PROXY, id="hops-0-ignores-header"),
    pytest.param(0, ("*",), PROXY, CLIENT, PROXY, id="hops-0-ignores-header-even-if-any-allowed"),
    pytest.param(1, ("127.0.0.1",), PROXY, CLIENT, CLIENT, id="hops-1-trusted-peer"),
    pytest.param(1, ("127.0.0.1",), PROXY, f"{SPOOF}, {CLIENT}", CLIENT,
                 id="hops-1-spoofed-left-most-ignored"),
    pytest.param(1, ("127.0.0.1",), PROXY, f"{SPOOF}, 10.1.1.1, {CLIENT}", CLIENT,
                 id="hops-1-several-spoofed"),
    pytest.param(1, ("127.0.0.1", "::1"), "::1", CLIENT, CLIENT, id="hops-1-ipv6-peer"),
    pytest.param(1, ("127.0.0.1",), STRANGER, CLIENT, STRANGER, id="hops-1-untrusted-peer"),
    pytest.param(1, ("127.0.0.1",), STRANGER, f"{SPOOF}, {CLIENT}", STRANGER,
                 id="hops-1-untrusted-peer-spoofing"),
    pytest.param(1, ("10.0.0.2",), PROXY, CLIENT, PROXY, id="hops-1-localhost-not-allowed"),
    pytest.param(1, ("*",), STRANGER, CLIENT, CLIENT, id="hops-1-any-peer-allowed"),
    pytest.param(1, ("127.0.0.1",), PROXY, None, PROXY, id="hops-1-no-header"),
    pytest.param(2, ("127.0.0.1",), PROXY, f"{SPOOF}, {CLIENT}, 10.0.0.3", CLIENT,
                 id="hops-2-second-from-right"),
    pytest.param(2, ("127.0.0.1",), PROXY, CLIENT, PROXY, id="hops-2-too-few-entries"),
])
def test_client_address(hops, allowed, peer, forwarded_for, expected):
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    assert seen(config(hops, allowed), peer, headers)["addr"] == expected


@pytest.mark.parametrize("hops, allowed, peer, proto, expected", [
    pytest.param(0, ("127.0.0.1",), PROXY, "https", "http", id="hops-0-ignored"),
    pytest.param(1, ("127.0.0.1",), PROXY, "https", "https", id="hops-1-trusted-peer"),
    pytest.param(1, ("127.0.0.1",), STRANGER, "https", "http", id="hops-1-untrusted-peer"),
])
def test_client_scheme(hops, allowed, peer, proto, expected):
    headers = {"X-Forwarded-Proto": proto, "X-Forwarded-For": CLIENT}
    assert seen(config(hops, allowed), peer, headers)["scheme"] == expected


def test_default_config_trusts_no_proxy():
    assert TestConfig.PROXY_HOPS == 0
    assert seen(TestConfig, PROXY, {"X-Forwarded-For": CLIENT})["addr"] == PROXY


# ---------------------------------------------------------------- in the request log


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(json.loads(JsonFormatter().format(record)))


@pytest.mark.parametrize("hops, peer, forwarded_for, expected", [
    pytest.param(0, PROXY, f"{SPOOF}, {CLIENT}", PROXY, id="hops-0"),
    pytest.param(1, PROXY, f"{SPOOF}, {CLIENT}", CLIENT, id="hops-1-trusted"),
    pytest.param(1, STRANGER, f"{SPOOF}, {CLIENT}", STRANGER, id="hops-1-untrusted"),
])
def test_request_log_client_is_real_address(hops, peer, forwarded_for, expected):
    client = create_app(config(hops)).test_client()
    handler = _Lines()
    logger = logging.getLogger("gateway.request")
    logger.addHandler(handler)
    try:
        client.get("/healthz", headers={"X-Forwarded-For": forwarded_for},
                   environ_base={"REMOTE_ADDR": peer}, buffered=True)
    finally:
        logger.removeHandler(handler)
    assert [line["client"] for line in handler.lines] == [expected]


@pytest.mark.parametrize("path", [
    pytest.param("/v1//models", id="doubled-inner"),
    pytest.param("/v1/models//", id="doubled-trailing"),
    pytest.param("/v1///models/", id="tripled-and-trailing"),
])
def test_doubled_slashes_are_served_not_redirected(client, auth, upstream, path):
    upstream.get(SEARCH_URL, json=load_data("cf_models_search_page1.json"))
    rv = client.get(path, headers=auth)
    assert rv.status_code == 200
    assert rv.json["object"] == "list"
