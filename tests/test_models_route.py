"""GET /v1/models, GET /v1/models/{id}, the allow-list on generation routes, and health checks.

Cloudflare's `ai/models/search` is served from the canned catalogue by a `responses`
callback that filters by task and pages like Cloudflare.
"""
import calendar
import json
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from tests.conftest import (KEY, MODEL, NoAccount, NoRetries, RUN_URL, SEARCH_URL, TestConfig,
                            cf_ok, load_data)
from gateway.cloudflare.catalogue import SERVED_TASKS
from tests.openai_spec import validate_error, validate_model, validate_models_list

CATALOGUE = load_data("workers_ai_catalogue.json")
TEXT_GENERATION = [r["name"] for r in CATALOGUE if r["task"]["name"] == "Text Generation"]
SERVED = [r["name"] for r in CATALOGUE if r["task"]["name"] in SERVED_TASKS]
GEMMA = "@cf/google/gemma-4-26b-a4b-it"
UNKNOWN = "@cf/acme/not-in-catalogue"
CHAT = "/v1/chat/completions"


class AllModels(TestConfig):
    MODELS = []


class WithUnknown(TestConfig):
    MODELS = [GEMMA, UNKNOWN, MODEL]


class NoKeys(TestConfig):
    API_KEYS = []


def serve_catalogue(mock, per_page_cap=20):
    """ai/models/search over the canned catalogue: task filter, pages of at most 20."""
    def callback(request):
        query = parse_qs(urlsplit(request.url).query)
        task = query.get("task", [None])[0]
        matching = [r for r in CATALOGUE if task is None or r["task"]["name"] == task]
        page = int(query.get("page", ["1"])[0])
        per_page = min(int(query.get("per_page", ["20"])[0]), per_page_cap)
        items = matching[(page - 1) * per_page:page * per_page]
        body = {**cf_ok(items), "result_info": {"page": page, "per_page": per_page,
                                                "count": len(items),
                                                "total_count": len(matching)}}
        return 200, {}, json.dumps(body)
    mock.add_callback(responses.GET, SEARCH_URL, callback=callback,
                      content_type="application/json")


@pytest.fixture
def catalogue(upstream):
    serve_catalogue(upstream)
    return upstream


def search_calls(mock):
    return [c for c in mock.calls if "/ai/models/search" in c.request.url]


def run_calls(mock):
    return [c for c in mock.calls if "/ai/run/" in c.request.url]


def assert_not_found(rv, model):
    assert rv.status_code == 404, rv.get_data(as_text=True)
    body = rv.get_json()
    validate_error(body)
    assert body["error"]["code"] == "model_not_found"
    assert model in body["error"]["message"]


def utc_seconds(text):
    moment = datetime.strptime(text.split(".")[0], "%Y-%m-%d %H:%M:%S")
    return calendar.timegm(moment.timetuple())


# ---------------------------------------------------------------- GET /v1/models


def test_list_with_allow_list_gives_allowed_models_in_order(client, auth, catalogue):
    rv = client.get("/v1/models", headers=auth)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    body = rv.get_json()
    validate_models_list(body)
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == TestConfig.MODELS
    for entry in body["data"]:
        validate_model(entry)
        assert entry["object"] == "model"
        assert entry["owned_by"] == "cloudflare"
        assert entry["permission"] == []
        assert entry["root"] == entry["id"]
        assert entry["parent"] is None
        assert entry["metadata"]["task"] == "Text Generation"
    llama = body["data"][0]
    assert llama["created"] == utc_seconds("2024-07-23 18:40:56.158")
    assert llama["metadata"]["context_window"] == 8192
    assert body["data"][1]["metadata"]["context_window"] == 128000


def test_list_asks_catalogue_once_for_every_task(client, auth, catalogue):
    client.get("/v1/models", headers=auth)
    sent = [parse_qs(urlsplit(c.request.url).query) for c in search_calls(catalogue)]
    assert sent and all("task" not in q for q in sent)  # one listing, filtered by the gateway


@pytest.mark.parametrize("config_class", [AllModels])
def test_list_without_allow_list_gives_every_served_model(client, auth, catalogue):
    rv = client.get("/v1/models", headers=auth)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    body = rv.get_json()
    validate_models_list(body)
    assert [m["id"] for m in body["data"]] == SERVED
    assert [m["metadata"]["task"] for m in body["data"]][-2:] == ["Text Embeddings",
                                                                    "Text-to-Image"]
    assert len(search_calls(catalogue)) == 2  # 25 models in pages of 20
    assert all(isinstance(m["metadata"]["context_window"], (int, type(None)))
               for m in body["data"])


@pytest.mark.parametrize("config_class", [WithUnknown])
def test_list_keeps_allowed_model_missing_from_catalogue(client, auth, catalogue):
    rv = client.get("/v1/models", headers=auth)
    assert rv.status_code == 200
    data = rv.get_json()["data"]
    assert [m["id"] for m in data] == WithUnknown.MODELS
    unknown = data[1]
    validate_model(unknown)
    assert unknown == {"id": UNKNOWN, "object": "model", "created": 0, "owned_by": "cloudflare",
                       "permission": [], "root": UNKNOWN, "parent": None,
                       "metadata": {"description": None, "task": None, "context_window": None}}


@pytest.mark.parametrize("config_class", [TestConfig, AllModels])
def test_list_is_cached_across_requests(client, auth, catalogue):
    first = client.get("/v1/models", headers=auth).get_json()
    calls = len(search_calls(catalogue))
    second = client.get("/v1/models", headers=auth).get_json()
    client.get(f"/v1/models/{MODEL}", headers=auth)  # reads the model's schema, not the list
    assert second == first
    assert len(search_calls(catalogue)) == calls


def test_list_needs_key(client, catalogue):
    rv = client.get("/v1/models")
    assert rv.status_code == 401
    assert len(catalogue.calls) == 0


# ---------------------------------------------------------------- GET /v1/models/{id}


@pytest.mark.parametrize("config_class, model_id", [
    pytest.param(TestConfig, MODEL, id="allow-list"),
    pytest.param(TestConfig, GEMMA, id="allow-list-second"),
    pytest.param(AllModels, MODEL, id="catalogue"),
    pytest.param(AllModels, "@hf/thebloke/mistral-7b-instruct-v0.1-awq", id="catalogue-hf"),
    pytest.param(WithUnknown, UNKNOWN, id="allowed-but-unknown"),
])
def test_retrieve_returns_one_model(client, auth, catalogue, model_id):
    rv = client.get(f"/v1/models/{model_id}", headers=auth)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    body = rv.get_json()
    validate_model(body)
    assert body["id"] == model_id
    assert body["object"] == "model"


def test_retrieve_matches_list_entry(client, auth, catalogue):
    listed = client.get("/v1/models", headers=auth).get_json()["data"][0]
    retrieved = client.get(f"/v1/models/{listed['id']}", headers=auth).get_json()
    del retrieved["metadata"]["capabilities"]  # only the single-model answer reads the schema
    assert retrieved == listed


SCHEMA_URL = SEARCH_URL.replace("/search", "/schema")


def test_retrieve_shows_capabilities_from_the_model_schema(client, auth, catalogue):
    from tests.fake_model_families import openai
    catalogue.add(responses.GET, SCHEMA_URL, json=cf_ok(openai(vision=True)))
    body = client.get(f"/v1/models/{GEMMA}", headers=auth).get_json()
    assert body["metadata"]["capabilities"] == {
        "tools": True, "json_mode": True, "stop": True, "vision": True, "reasoning": True,
        "streaming": True}
    schema_calls = [c for c in catalogue.calls if "/ai/models/schema" in c.request.url]
    assert len(schema_calls) == 1 and parse_qs(urlsplit(
        schema_calls[0].request.url).query) == {"model": [GEMMA]}
    client.get(f"/v1/models/{GEMMA}", headers=auth)
    assert len([c for c in catalogue.calls if "/ai/models/schema" in c.request.url]) == 1


def test_retrieve_without_readable_schema_shows_what_is_known(client, auth, catalogue):
    catalogue.add(responses.GET, SCHEMA_URL, status=500, body="oops")
    rv = client.get(f"/v1/models/{GEMMA}", headers=auth)
    assert rv.status_code == 200
    assert rv.get_json()["metadata"]["capabilities"] == {
        "tools": False, "json_mode": False, "stop": True, "vision": False,
        "reasoning": True, "streaming": True}


@pytest.mark.parametrize("config_class, model_id", [
    pytest.param(TestConfig, "@cf/meta/llama-3.2-1b-instruct", id="in-catalogue-not-allowed"),
    pytest.param(TestConfig, UNKNOWN, id="allow-list-unknown"),
    pytest.param(AllModels, UNKNOWN, id="not-in-catalogue"),
    pytest.param(AllModels, "@cf/meta", id="prefix-of-a-name"),
    pytest.param(AllModels, "llama-3.1-8b-instruct", id="without-namespace"),
])
def test_retrieve_unknown_model_is_404(client, auth, catalogue, model_id):
    rv = client.get(f"/v1/models/{model_id}", headers=auth)
    assert_not_found(rv, model_id)


def test_retrieve_needs_key(client, catalogue):
    assert client.get(f"/v1/models/{MODEL}").status_code == 401
    assert len(catalogue.calls) == 0


# ---------------------------------------------------------------- allow-list on generation


@pytest.mark.parametrize("path, body", [
    pytest.param(CHAT, {"model": "@cf/meta/llama-3.2-1b-instruct",
                        "messages": [{"role": "user", "content": "Hi"}]}, id="chat"),
    pytest.param(CHAT, {"model": "@cf/meta/llama-3.2-1b-instruct", "stream": True,
                        "messages": [{"role": "user", "content": "Hi"}]}, id="chat-stream"),
    pytest.param("/v1/completions", {"model": "@cf/meta/llama-3.2-1b-instruct",
                                     "prompt": "Hi"}, id="completions"),
])
def test_generation_outside_allow_list_is_404_before_upstream(client, auth, upstream, path, body):
    rv = client.post(path, json=body, headers=auth)
    assert_not_found(rv, body["model"])
    assert len(upstream.calls) == 0


@pytest.mark.parametrize("config_class", [AllModels])
def test_generation_without_allow_list_unknown_model_is_404_without_run(client, auth, catalogue):
    rv = client.post(CHAT, json={"model": UNKNOWN, "messages": [{"role": "user", "content": "Hi"}]},
                     headers=auth)
    assert_not_found(rv, UNKNOWN)
    assert run_calls(catalogue) == []


@pytest.mark.parametrize("config_class", [AllModels])
def test_generation_without_allow_list_catalogue_model_is_served(client, auth, catalogue):
    catalogue.add(responses.POST, RUN_URL + MODEL, json=load_data("cf_chat_classic_ok.json"))
    rv = client.post(CHAT, json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
                     headers=auth)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    assert len(run_calls(catalogue)) == 1


# ---------------------------------------------------------------- health


def test_healthz_needs_no_key_and_no_upstream(client, upstream):
    rv = client.get("/healthz")
    assert rv.status_code == 200
    assert rv.get_json()["status"] == "ok"
    assert len(upstream.calls) == 0


@pytest.mark.parametrize("config_class", [NoKeys, NoAccount])
def test_healthz_is_ok_even_when_not_ready(client, upstream):
    assert client.get("/healthz").status_code == 200
    assert len(upstream.calls) == 0


def test_readyz_is_200_when_configured_and_catalogue_reachable(client, catalogue):
    rv = client.get("/readyz")
    assert rv.status_code == 200, rv.get_data(as_text=True)
    assert rv.get_json()["status"] == "ready"
    assert len(search_calls(catalogue)) >= 1


@pytest.mark.parametrize("config_class", [NoRetries])
def test_readyz_is_200_from_cache_when_catalogue_goes_down(client, upstream):
    serve_catalogue(upstream)
    assert client.get("/readyz").status_code == 200
    calls = len(upstream.calls)
    upstream.replace(responses.GET, SEARCH_URL, body=requests.ConnectionError("down"))
    rv = client.get("/readyz")
    assert rv.status_code == 200
    assert len(upstream.calls) == calls  # cached: no call needed


@pytest.mark.parametrize("config_class", [NoRetries])
def test_readyz_is_503_when_catalogue_unreachable_and_nothing_cached(client, upstream):
    upstream.add(responses.GET, SEARCH_URL, body=requests.ConnectionError("down"))
    rv = client.get("/readyz")
    assert rv.status_code == 503
    body = rv.get_json()
    assert body["status"] == "unavailable"
    assert any("catalogue" in reason for reason in body["reasons"])


@pytest.mark.parametrize("config_class, mentions", [
    pytest.param(NoKeys, "API_KEYS", id="no-keys"),
    pytest.param(NoAccount, "CLOUDFLARE_API_TOKEN", id="no-account"),
])
def test_readyz_is_503_with_reason_when_not_configured(client, catalogue, mentions):
    rv = client.get("/readyz")
    assert rv.status_code == 503
    body = rv.get_json()
    assert body["status"] == "unavailable"
    assert any(mentions in reason for reason in body["reasons"])


def test_readyz_needs_no_key(client, catalogue):
    rv = client.get("/readyz", headers={"Authorization": "Bearer wrong"})
    assert rv.status_code == 200
    assert KEY not in rv.get_data(as_text=True)


class ReadyzToken(TestConfig):
    METRICS_TOKEN = "readyz-metrics-token-5q"


@pytest.mark.parametrize("config_class", [ReadyzToken])
@pytest.mark.parametrize("remote, headers, reasons", [
    pytest.param("203.0.113.9", {}, False, id="anonymous"),
    pytest.param("203.0.113.9", {"Authorization": "Bearer wrong"}, False, id="wrong-token"),
    pytest.param("203.0.113.9", {"Authorization": "Bearer readyz-metrics-token-5q"}, True,
                 id="metrics-token"),
    pytest.param("127.0.0.1", {}, True, id="loopback"),
])
def test_anonymous_readyz_says_only_ready_or_not(client, upstream, caplog, remote, headers,
                                                 reasons):
    """Why the gateway is not ready is for its operator: the log, loopback, the metrics token."""
    upstream.add(responses.GET, SEARCH_URL, body=requests.ConnectionError("down"))
    with caplog.at_level("WARNING", logger="gateway"):
        rv = client.get("/readyz", headers=headers, environ_base={"REMOTE_ADDR": remote})
    assert rv.status_code == 503
    assert rv.get_json()["status"] == "unavailable"
    assert ("reasons" in rv.get_json()) is reasons
    assert "catalogue" not in rv.get_data(as_text=True) or reasons
    assert any("not ready" in r.getMessage() and "catalogue" in r.getMessage()
               for r in caplog.records)
