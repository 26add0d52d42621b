"""CORS (gateway/ops/cors.py): exact origins, explicit `*.` wildcards, API routes only."""
import pytest

from gateway import create_app
from gateway.ops.cors import origin_patterns
from tests.conftest import TestConfig
from tests.test_models_route import serve_catalogue


class Listed(TestConfig):
    CORS_ORIGINS = ["https://app.example.com", "https://*.example.org", "http://localhost:3000"]


def allowed(client, origin):
    rv = client.options("/v1/chat/completions", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST"})
    return rv.headers.get("Access-Control-Allow-Origin") == origin


@pytest.mark.parametrize("config_class", [Listed])
@pytest.mark.parametrize("origin, expected", [
    pytest.param("https://app.example.com", True, id="exact"),
    pytest.param("HTTPS://APP.EXAMPLE.COM", True, id="exact-any-case"),
    pytest.param("https://a.example.org", True, id="wildcard-subdomain"),
    pytest.param("https://a.b.example.org", True, id="wildcard-deeper-subdomain"),
    pytest.param("http://localhost:3000", True, id="exact-with-port"),
    pytest.param("https://example.org", False, id="wildcard-not-the-host-itself"),
    pytest.param("https://xexample.org", False, id="wildcard-glued-prefix"),
    pytest.param("https://a.example.org.attacker.net", False, id="wildcard-suffix"),
    pytest.param("https://xexample.org.attacker.net", False, id="the-review-finding"),
    pytest.param("https://app.example.com.attacker.net", False, id="exact-suffix"),
    pytest.param("https://app.example.comx", False, id="exact-longer"),
    pytest.param("http://app.example.com", False, id="other-scheme"),
    pytest.param("http://localhost:30000", False, id="other-port"),
    pytest.param("https://a.example.org:8443", False, id="wildcard-other-port"),
])
def test_cors_origins_match_exactly_with_explicit_wildcards(client, origin, expected):
    assert allowed(client, origin) is expected


@pytest.mark.parametrize("value", [
    pytest.param("https://*example.com", id="glob-without-dot"),
    pytest.param("^https://.*$", id="regex"),
    pytest.param("https://app.example.com/", id="trailing-slash"),
    pytest.param("https://app.example.com/path", id="path"),
    pytest.param("app.example.com", id="no-scheme"),
    pytest.param("https://a.*.example.com", id="inner-wildcard"),
    pytest.param("https://(a|b).example.com", id="alternation"),
])
def test_cors_origins_that_are_not_origins_stop_the_start_up(value):
    class Bad(TestConfig):
        CORS_ORIGINS = [value]

    with pytest.raises(ValueError, match="CORS_ORIGINS"):
        create_app(Bad)


def test_cors_star_allows_any_origin():
    assert origin_patterns(["*"]) == "*"


SDK_HEADERS = ("authorization, content-type, openai-organization, openai-project, x-request-id, "
               "x-stainless-arch, x-stainless-lang, x-stainless-os, x-stainless-package-version, "
               "x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, "
               "x-stainless-timeout")


@pytest.mark.parametrize("config_class", [Listed])
def test_preflight_allows_the_headers_openai_sdks_send_from_a_browser(client):
    """OpenAI's JavaScript SDK in a browser sends X-Stainless-* and OpenAI-* headers: a
    preflight that leaves any out makes the browser refuse the call."""
    rv = client.options("/v1/responses", headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": SDK_HEADERS})
    allowed = {h.strip().lower() for h in rv.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {h.strip() for h in SDK_HEADERS.split(",")}
    rv = client.options("/v1/responses", headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, x-not-ours, x-stainless-os-evil!"})
    assert rv.headers["Access-Control-Allow-Headers"].lower() == "authorization"



def cors_headers(rv):
    return sorted((k, v) for k, v in rv.headers.items() if k.startswith("Access-Control")
                  or k == "Vary")


@pytest.fixture
def catalogue(upstream):
    serve_catalogue(upstream)
    return upstream


@pytest.mark.parametrize("config_class", [Listed])
@pytest.mark.parametrize("path, origin, allowed", [
    pytest.param("/v1/models", None, False, id="api-no-origin"),
    pytest.param("/v1/models", "https://app.example.com", True, id="api-allowed-origin"),
    pytest.param("/v1/models", "https://evil.example.net", False, id="api-other-origin"),
    pytest.param("/healthz", "https://app.example.com", False, id="not-api"),
])
def test_remembered_cors_headers_are_flask_cors_own(client, auth, catalogue, path, origin,
                                                    allowed):
    """Answers that succeed (errors get theirs from flask-cors' error handlers): the second
    for the same path and Origin gets the remembered headers, the same as flask-cors worked
    out for the first, each once."""
    headers = auth | ({"Origin": origin} if origin else {})
    first, second = (client.get(path, headers=headers) for _ in range(2))
    assert first.status_code == second.status_code == 200
    assert cors_headers(second) == cors_headers(first)
    for rv in (first, second):
        assert rv.headers.getlist("Access-Control-Allow-Origin") == ([origin] if allowed else [])
        assert len(rv.headers.getlist("Vary")) <= 1


@pytest.mark.parametrize("config_class", [Listed])
def test_remembered_cors_headers_are_bounded(client, auth, catalogue, monkeypatch):
    monkeypatch.setattr("gateway.ops.cors.REMEMBERED", 2)
    for i in range(5):
        origin = f"https://{i % 3}.example.org"
        rv = client.get("/v1/models", headers=auth | {"Origin": origin})
        assert rv.status_code == 200
        assert rv.headers.getlist("Access-Control-Allow-Origin") == [origin]
