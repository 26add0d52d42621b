"""GET /metrics (gateway/ops/metrics.py, gateway/routes/metrics.py): Prometheus text, optional token.

Metrics are process-global counters shared by every app the tests build, so each test
reads /metrics before and after and asserts on the increase.
"""
import time
import types

import pytest
import responses
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import KEY, MODEL, NoRetries, RUN_URL, SEARCH_URL, TestConfig, cf_ok, load_data
from tests.openai_spec import validate_error

CHAT = "/v1/chat/completions"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}]}
OK = load_data("cf_chat_classic_ok.json")
METRICS_TOKEN = "metrics-scrape-token-81f"


class Guarded(TestConfig):
    METRICS_TOKEN = METRICS_TOKEN


@pytest.fixture(autouse=True)
def single_process(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


def scrape(client, headers=None):
    """{(sample name, frozenset(labels)): value} from /metrics."""
    rv = client.get("/metrics", headers=headers or {}, buffered=True)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    samples = {}
    for family in text_string_to_metric_families(rv.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


class Watch:
    """Reads a metric sample before and after some requests."""

    def __init__(self, client, headers=None):
        self.client, self.headers = client, headers
        self.before = scrape(client, headers)

    def increase(self, name, **labels):
        after = scrape(self.client, self.headers)
        return value(after, name, **labels) - value(self.before, name, **labels)


# ---------------------------------------------------------------- exposition


def test_metrics_is_prometheus_text_without_key(client, upstream):
    rv = client.get("/metrics", buffered=True)
    assert rv.status_code == 200
    assert rv.mimetype == "text/plain"
    text = rv.get_data(as_text=True)
    for name in ("gateway_requests_total", "gateway_request_duration_seconds",
                 "gateway_time_to_first_token_seconds", "gateway_tokens_total",
                 "gateway_upstream_errors_total", "gateway_open_streams"):
        assert f"# TYPE {name}" in text
    assert len(upstream.calls) == 0


def test_metrics_open_with_any_authorization_when_no_token(client):
    rv = client.get("/metrics", headers={"Authorization": "Bearer whatever"}, buffered=True)
    assert rv.status_code == 200


# ---------------------------------------------------------------- request counters


def test_request_counted_by_route_status_and_model(client, auth, upstream):
    upstream.add(responses.POST, RUN_URL + MODEL, json=OK)
    watch = Watch(client)
    assert client.post(CHAT, json=BODY, headers=auth, buffered=True).status_code == 200
    assert watch.increase("gateway_requests_total", route=CHAT, status="200", model=MODEL) == 1
    assert watch.increase("gateway_request_duration_seconds_count", route=CHAT) == 1


@pytest.mark.parametrize("method, path, headers, route, status", [
    pytest.param("get", "/healthz", {}, "/healthz", "200", id="healthz"),
    pytest.param("post", CHAT, {}, CHAT, "401", id="unauthorized"),
    pytest.param("get", "/v1/nope", {"Authorization": f"Bearer {KEY}"}, "other", "404",
                 id="unknown-route"),
])
def test_request_counted_without_model(client, method, path, headers, route, status):
    watch = Watch(client)
    getattr(client, method)(path, headers=headers, buffered=True)
    assert watch.increase("gateway_requests_total", route=route, status=status, model="") == 1


def test_models_routes_share_one_label(client, auth, upstream):
    upstream.add(responses.GET, SEARCH_URL, json=cf_ok([]))
    watch = Watch(client)
    client.get("/v1/models/@cf/acme/unknown-one", headers=auth, buffered=True)
    client.get("/v1/models/@cf/acme/unknown-two", headers=auth, buffered=True)
    assert watch.increase("gateway_requests_total", route="/v1/models", status="404",
                          model="") == 2


def test_tokens_counted_by_direction_and_model(client, auth, upstream):
    upstream.add(responses.POST, RUN_URL + MODEL, json=OK)
    usage = OK["result"]["usage"]
    watch = Watch(client)
    client.post(CHAT, json=BODY, headers=auth, buffered=True)
    assert watch.increase("gateway_tokens_total", direction="prompt",
                          model=MODEL) == usage["prompt_tokens"]
    assert watch.increase("gateway_tokens_total", direction="completion",
                          model=MODEL) == usage["completion_tokens"]


@pytest.mark.parametrize("config_class", [NoRetries])
def test_upstream_error_counted_by_cf_code(client, auth, upstream):
    upstream.add(responses.POST, RUN_URL + MODEL, status=429, json=load_data("cf_error_3040.json"))
    watch = Watch(client)
    rv = client.post(CHAT, json=BODY, headers=auth, buffered=True)
    assert rv.status_code == 429
    assert watch.increase("gateway_upstream_errors_total", cf_code="3040",
                          upstream_status="429") == 1
    assert watch.increase("gateway_requests_total", route=CHAT, status="429", model=MODEL) == 1


def test_every_retried_attempt_is_counted(client, auth, upstream, monkeypatch):
    fake_time = types.SimpleNamespace(monotonic=time.monotonic, sleep=lambda seconds: None)
    monkeypatch.setattr("gateway.cloudflare.client.time", fake_time)
    upstream.add(responses.POST, RUN_URL + MODEL, status=429, json=load_data("cf_error_3040.json"))
    watch = Watch(client)
    client.post(CHAT, json=BODY, headers=auth, buffered=True)
    attempts = 1 + TestConfig.UPSTREAM_RETRIES
    assert len(upstream.calls) == attempts
    assert watch.increase("gateway_upstream_errors_total", cf_code="3040",
                          upstream_status="429") == attempts


# ---------------------------------------------------------------- streams


def add_stream(upstream):
    upstream.add(responses.POST, RUN_URL + MODEL, body=load_data("cf_stream_classic.sse"),
                 content_type="text/event-stream")


def test_stream_records_time_to_first_token(client, auth, upstream):
    add_stream(upstream)
    watch = Watch(client)
    rv = client.post(CHAT, json={**BODY, "stream": True}, headers=auth, buffered=True)
    assert rv.status_code == 200
    assert watch.increase("gateway_time_to_first_token_seconds_count", model=MODEL) == 1
    assert watch.increase("gateway_requests_total", route=CHAT, status="200", model=MODEL) == 1


def test_non_stream_records_no_time_to_first_token(client, auth, upstream):
    upstream.add(responses.POST, RUN_URL + MODEL, json=OK)
    watch = Watch(client)
    client.post(CHAT, json=BODY, headers=auth, buffered=True)
    assert watch.increase("gateway_time_to_first_token_seconds_count", model=MODEL) == 0


def test_open_streams_counts_stream_while_open(client, auth, upstream):
    add_stream(upstream)
    before = value(scrape(client), "gateway_open_streams")
    rv = client.post(CHAT, json={**BODY, "stream": True}, headers=auth, buffered=False)
    assert rv.status_code == 200
    assert value(scrape(client), "gateway_open_streams") == before + 1
    b"".join(rv.response)
    rv.close()
    assert value(scrape(client), "gateway_open_streams") == before


def test_open_streams_drops_when_client_leaves(client, auth, upstream):
    add_stream(upstream)
    before = value(scrape(client), "gateway_open_streams")
    rv = client.post(CHAT, json={**BODY, "stream": True}, headers=auth, buffered=False)
    next(iter(rv.response))
    rv.close()
    assert value(scrape(client), "gateway_open_streams") == before


# ---------------------------------------------------------------- METRICS_TOKEN


@pytest.mark.parametrize("config_class", [Guarded])
@pytest.mark.parametrize("headers", [
    pytest.param({}, id="no-header"),
    pytest.param({"Authorization": "Bearer wrong-token"}, id="wrong-token"),
    pytest.param({"Authorization": f"Bearer {KEY}"}, id="gateway-api-key"),
    pytest.param({"Authorization": "Bearer sk-second-key"}, id="second-api-key"),
    pytest.param({"Authorization": f"Bearer {METRICS_TOKEN}x"}, id="token-with-suffix"),
    pytest.param({"Authorization": f"Bearer {METRICS_TOKEN[:-1]}"}, id="token-prefix"),
    pytest.param({"Authorization": "Bearer "}, id="empty-bearer"),
])
def test_guarded_metrics_refuses_without_metrics_token(client, upstream, headers):
    rv = client.get("/metrics", headers=headers, buffered=True)
    assert rv.status_code == 401
    body = rv.get_json()
    validate_error(body)
    assert body["error"]["code"] == "invalid_api_key"
    assert rv.headers["WWW-Authenticate"] == "Bearer"
    assert "gateway_requests_total" not in rv.get_data(as_text=True)
    assert METRICS_TOKEN not in rv.get_data(as_text=True)


@pytest.mark.parametrize("config_class", [Guarded])
def test_guarded_metrics_accepts_metrics_token(client):
    rv = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
                    buffered=True)
    assert rv.status_code == 200
    assert "gateway_requests_total" in rv.get_data(as_text=True)


@pytest.mark.parametrize("config_class", [Guarded])
def test_metrics_token_is_not_an_api_key(client, upstream):
    rv = client.post(CHAT, json=BODY, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert rv.status_code == 401
    assert len(upstream.calls) == 0


# ---------------------------------------------------------------- METRICS_ALLOW_IPS


class ElsewhereOnly(TestConfig):
    METRICS_ALLOW_IPS = ["10.1.0.0/16"]


@pytest.mark.parametrize("remote, status", [
    pytest.param("127.0.0.1", 200, id="loopback"),
    pytest.param("::1", 200, id="loopback-v6"),
    pytest.param("203.0.113.9", 403, id="public-address"),
    pytest.param("10.0.0.5", 403, id="private-address"),
])
def test_metrics_without_token_answer_only_the_allowed_addresses(client, remote, status):
    """No METRICS_TOKEN: /metrics answers only METRICS_ALLOW_IPS (default loopback)."""
    rv = client.get("/metrics", environ_base={"REMOTE_ADDR": remote}, buffered=True)
    assert rv.status_code == status, rv.get_data(as_text=True)
    if status != 200:
        validate_error(rv.get_json())
        assert "gateway_requests_total" not in rv.get_data(as_text=True)
        assert "METRICS_ALLOW_IPS" in rv.get_json()["error"]["message"]


@pytest.mark.parametrize("config_class", [ElsewhereOnly])
def test_metrics_allow_ips_takes_networks(client):
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 403


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
@pytest.mark.parametrize("method", ["get", "options"])
def test_operational_routes_send_no_cors_headers(client, upstream, path, method):
    upstream.add(responses.GET, SEARCH_URL, json=cf_ok([]))
    rv = getattr(client, method)(path, headers={"Origin": "https://evil.example",
                                                "Access-Control-Request-Method": "GET"})
    assert not [h for h in rv.headers.keys() if h.lower().startswith("access-control-")]


@pytest.mark.parametrize("config_class", [NoRetries])
@pytest.mark.parametrize("code, label", [
    pytest.param(3040, "3040", id="known"),
    pytest.param(987654, "other", id="unknown"),
    pytest.param("9" * 40, "", id="huge-is-no-code"),
])
def test_upstream_error_labels_stay_bounded(client, auth, upstream, code, label):
    """Each distinct Cloudflare code must not add a series: unknown codes are "other"."""
    upstream.add(responses.POST, RUN_URL + MODEL, status=429,
                 json={"success": False, "errors": [{"code": code, "message": "x"}]})
    watch = Watch(client)
    client.post(CHAT, json=BODY, headers=auth, buffered=True)
    assert watch.increase("gateway_upstream_errors_total", cf_code=label,
                          upstream_status="429") == 1
    assert str(code) not in scrape_text(client) or label == str(code)


def scrape_text(client):
    return client.get("/metrics", buffered=True).get_data(as_text=True)
