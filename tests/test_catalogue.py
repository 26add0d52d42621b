"""The model catalogue (gateway/cloudflare/catalogue.py) and its source, `ai/models/search` paging.

The cache is driven by an injected clock and a stub upstream; the paging by a
`responses` callback that serves the canned catalogue like Cloudflare does.
"""
import calendar
import json
import threading
import time
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from gateway.cloudflare.catalogue import ModelCatalogue, model_entry
from gateway.errors import APIError, NotFoundError, ServiceUnavailableError, UpstreamError
from gateway.cloudflare.client import CATALOGUE_PAGE_SIZE, UpstreamClient
from tests.conftest import Clock, MODEL, SEARCH_URL, TestConfig, cf_ok, load_data
from tests.openai_spec import validate_model

CATALOGUE = load_data("workers_ai_catalogue.json")
TEXT_GENERATION = [r for r in CATALOGUE if r["task"]["name"] == "Text Generation"]
PAGE1 = load_data("cf_models_search_page1.json")
GEMMA = "@cf/google/gemma-4-26b-a4b-it"
LLAMA_70B = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
TTL = 300.0


def utc_seconds(text):
    """Unix seconds of "YYYY-MM-DD HH:MM:SS.mmm" read as UTC (fraction dropped)."""
    moment = datetime.strptime(text.split(".")[0], "%Y-%m-%d %H:%M:%S")
    return calendar.timegm(moment.timetuple())


def record(name):
    return next(r for r in CATALOGUE if r["name"] == name)


class StubUpstream:
    """search_models() from a list of outcomes: record lists, or APIErrors to raise."""

    def __init__(self, *outcomes, delay=0.0):
        self.outcomes = list(outcomes) or [TEXT_GENERATION]
        self.delay = delay
        self.calls = 0
        self._lock = threading.Lock()

    def search_models(self, task="Text Generation"):
        with self._lock:
            self.calls += 1
            outcome = self.outcomes[min(self.calls, len(self.outcomes)) - 1]
        if self.delay:
            time.sleep(self.delay)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def down():
    return UpstreamError("Could not reach Workers AI.", code="upstream_unreachable")


# ---------------------------------------------------------------- entries


@pytest.mark.parametrize("name, context_window", [
    pytest.param("@cf/meta/llama-3.1-8b-instruct", 8192, id="string-context-window"),
    pytest.param(LLAMA_70B, 24000, id="other-string-context-window"),
    pytest.param(GEMMA, 128000, id="numeric-context-window"),
])
def test_model_entry_has_openai_fields_and_metadata(name, context_window):
    source = record(name)
    entry = model_entry(name, source)
    validate_model(entry)
    assert entry == {
        "id": name,
        "object": "model",
        "created": utc_seconds(source["created_at"]),
        "owned_by": "cloudflare",
        "permission": [],
        "root": name,
        "parent": None,
        "metadata": {"description": source["description"], "task": "Text Generation",
                     "context_window": context_window},
    }
    assert isinstance(entry["metadata"]["context_window"], int)


@pytest.mark.parametrize("created_at, expected", [
    pytest.param("2024-12-06 17:09:18.338", 1733504958, id="cloudflare-format"),
    pytest.param("2026-04-02 16:12:45.120", utc_seconds("2026-04-02 16:12:45"), id="gemma"),
    pytest.param("1970-01-01 00:00:00.000", 0, id="epoch"),
    pytest.param("2024-02-29 23:59:59.999", utc_seconds("2024-02-29 23:59:59"), id="leap-day"),
])
def test_model_entry_created_reads_created_at_as_utc(created_at, expected):
    entry = model_entry(MODEL, {"name": MODEL, "created_at": created_at})
    assert entry["created"] == expected
    assert isinstance(entry["created"], int)


def test_model_entry_created_ignores_local_time_zone(monkeypatch):
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        entry = model_entry(MODEL, {"name": MODEL, "created_at": "2024-12-06 17:09:18.338"})
    finally:
        monkeypatch.undo()
        time.tzset()
    assert entry["created"] == 1733504958


@pytest.mark.parametrize("source", [
    pytest.param({}, id="empty-record"),
    pytest.param({"created_at": None}, id="null-created-at"),
    pytest.param({"created_at": "yesterday"}, id="garbage-created-at"),
])
def test_model_entry_created_is_zero_when_unknown(source):
    assert model_entry(MODEL, source)["created"] == 0


def test_model_entry_without_record_has_null_metadata():
    entry = model_entry("@cf/acme/not-in-catalogue")
    validate_model(entry)
    assert entry == {
        "id": "@cf/acme/not-in-catalogue", "object": "model", "created": 0,
        "owned_by": "cloudflare", "permission": [], "root": "@cf/acme/not-in-catalogue",
        "parent": None,
        "metadata": {"description": None, "task": None, "context_window": None},
    }


@pytest.mark.parametrize("value, expected", [
    pytest.param("8192", 8192, id="string"),
    pytest.param(8192, 8192, id="int"),
    pytest.param(None, None, id="null"),
    pytest.param("unknown", None, id="garbage"),
])
def test_model_entry_context_window_is_int_or_null(value, expected):
    source = {"properties": [{"property_id": "context_window", "value": value}]}
    assert model_entry(MODEL, source)["metadata"]["context_window"] == expected


# ---------------------------------------------------------------- allow-list


def test_entries_without_allow_list_are_the_catalogue_in_order():
    catalogue = ModelCatalogue(StubUpstream(), TTL, [], clock=Clock())
    assert [e["id"] for e in catalogue.entries()] == [r["name"] for r in TEXT_GENERATION]


def test_entries_with_allow_list_follow_allow_list_and_keep_unknown_names():
    allow = [GEMMA, "@cf/acme/not-in-catalogue", MODEL]
    catalogue = ModelCatalogue(StubUpstream(), TTL, allow, clock=Clock())
    entries = catalogue.entries()
    assert [e["id"] for e in entries] == allow
    assert entries[0]["metadata"]["context_window"] == 128000
    unknown = entries[1]
    assert unknown["created"] == 0
    assert unknown["metadata"] == {"description": None, "task": None, "context_window": None}
    for entry in entries:
        validate_model(entry)


@pytest.mark.parametrize("allow, model_id", [
    pytest.param([], MODEL, id="catalogue"),
    pytest.param([GEMMA, "@cf/acme/unknown"], "@cf/acme/unknown", id="allow-list-unknown"),
])
def test_entry_finds_one_model(allow, model_id):
    catalogue = ModelCatalogue(StubUpstream(), TTL, allow, clock=Clock())
    assert catalogue.entry(model_id)["id"] == model_id


@pytest.mark.parametrize("allow, model_id", [
    pytest.param([], "@cf/acme/unknown", id="not-in-catalogue"),
    pytest.param([GEMMA], MODEL, id="outside-allow-list"),
])
def test_entry_raises_model_not_found(allow, model_id):
    catalogue = ModelCatalogue(StubUpstream(), TTL, allow, clock=Clock())
    with pytest.raises(NotFoundError) as info:
        catalogue.entry(model_id)
    assert info.value.status == 404
    assert info.value.code == "model_not_found"


def test_check_allowed_with_allow_list_needs_no_upstream_call():
    stub = StubUpstream()
    catalogue = ModelCatalogue(stub, TTL, [MODEL], clock=Clock())
    catalogue.check_allowed(MODEL)
    with pytest.raises(NotFoundError):
        catalogue.check_allowed(GEMMA)
    assert stub.calls == 0


def test_check_allowed_without_allow_list_uses_catalogue():
    catalogue = ModelCatalogue(StubUpstream(), TTL, [], clock=Clock())
    catalogue.check_allowed(MODEL)
    with pytest.raises(NotFoundError) as info:
        catalogue.check_allowed("@cf/acme/unknown")
    assert info.value.param == "model"


# ---------------------------------------------------------------- cache


def test_catalogue_is_cached_for_ttl():
    stub, clock = StubUpstream(), Clock()
    catalogue = ModelCatalogue(stub, TTL, [], clock=clock)
    catalogue.entries()
    clock.now += TTL - 0.001
    catalogue.entries()
    catalogue.records()
    assert stub.calls == 1
    clock.now += 0.001
    catalogue.entries()
    assert stub.calls == 2


def test_catalogue_refresh_replaces_list():
    stub, clock = StubUpstream(TEXT_GENERATION[:2], TEXT_GENERATION[:3]), Clock()
    catalogue = ModelCatalogue(stub, TTL, [], clock=clock)
    assert len(catalogue.entries()) == 2
    clock.now += TTL
    assert len(catalogue.entries()) == 3


def call_together(function, count=20):
    """Call `function` from `count` threads released at once; (results, APIErrors raised)."""
    results, failures = [], []
    barrier = threading.Barrier(count)

    def worker():
        barrier.wait()
        try:
            results.append(function())
        except APIError as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    return results, failures


@pytest.mark.parametrize("method", ["records", "entries"])
def test_cold_cache_makes_one_upstream_call_for_concurrent_requests(method):
    stub = StubUpstream(delay=0.2)
    catalogue = ModelCatalogue(stub, TTL, [])
    results, failures = call_together(getattr(catalogue, method))
    assert failures == []
    assert len(results) == 20
    assert stub.calls == 1


def test_cold_cache_failure_makes_one_upstream_call_for_concurrent_requests():
    stub = StubUpstream(down(), delay=0.2)
    catalogue = ModelCatalogue(stub, TTL, [])
    _, failures = call_together(catalogue.records)
    assert len(failures) == 20
    assert all(f.status == 502 for f in failures)
    assert stub.calls == 1


def test_failed_refresh_serves_stale_list():
    stub, clock = StubUpstream(TEXT_GENERATION[:2], down()), Clock()
    catalogue = ModelCatalogue(stub, TTL, [], clock=clock)
    first = [e["id"] for e in catalogue.entries()]
    clock.now += TTL + 1
    assert [e["id"] for e in catalogue.entries()] == first
    assert stub.calls == 2


def test_failed_refresh_is_retried_only_after_backoff():
    stub, clock = StubUpstream(TEXT_GENERATION[:2], down(), down(), TEXT_GENERATION[:4]), Clock()
    catalogue = ModelCatalogue(stub, TTL, [], clock=clock)
    catalogue.entries()
    clock.now += TTL + 1
    catalogue.entries()
    assert stub.calls == 2
    for _ in range(10):
        clock.now += 0.1
        assert len(catalogue.entries()) == 2  # stale, and no new call yet
    assert stub.calls == 2
    clock.now += 5.0
    assert len(catalogue.entries()) == 2  # retried (failed again), stale again
    assert stub.calls == 3
    clock.now += 5.0
    assert len(catalogue.entries()) == 4
    assert stub.calls == 4


def test_failure_with_nothing_cached_raises_and_backs_off():
    stub, clock = StubUpstream(down(), TEXT_GENERATION), Clock()
    catalogue = ModelCatalogue(stub, TTL, [], clock=clock)
    with pytest.raises(UpstreamError):
        catalogue.records()
    clock.now += 1
    with pytest.raises(UpstreamError):
        catalogue.records()
    assert stub.calls == 1
    clock.now += 5
    assert len(catalogue.records()) == len(TEXT_GENERATION)
    assert stub.calls == 2


def test_check_allowed_without_allow_list_lets_model_through_when_catalogue_down():
    catalogue = ModelCatalogue(StubUpstream(down()), TTL, [], clock=Clock())
    catalogue.check_allowed(MODEL)  # Workers AI itself will judge the name


# ---------------------------------------------------------------- ai/models/search paging


def serve_catalogue(mock, records=CATALOGUE, per_page_cap=None, total=True):
    """Serve `records` from ai/models/search as Cloudflare does: task filter, pages."""
    def callback(request):
        query = parse_qs(urlsplit(request.url).query)
        task = query.get("task", [None])[0]
        matching = [r for r in records if task is None or r["task"]["name"] == task]
        page = int(query.get("page", ["1"])[0])
        per_page = int(query.get("per_page", ["20"])[0])
        if per_page_cap:
            per_page = min(per_page, per_page_cap)
        items = matching[(page - 1) * per_page:page * per_page]
        body = {**cf_ok(items)}
        if total:
            body["result_info"] = {"page": page, "per_page": per_page, "count": len(items),
                                   "total_count": len(matching)}
        return 200, {}, json.dumps(body)
    mock.add_callback(responses.GET, SEARCH_URL, callback=callback,
                      content_type="application/json")


def queries(mock):
    return [parse_qs(urlsplit(call.request.url).query) for call in mock.calls]


@pytest.fixture
def search_client():
    return UpstreamClient({k: getattr(TestConfig, k) for k in dir(TestConfig) if k.isupper()})


def test_search_asks_for_text_generation_pages(search_client, upstream):
    serve_catalogue(upstream)
    records = search_client.search_models()
    assert [r["name"] for r in records] == [r["name"] for r in TEXT_GENERATION]
    sent = queries(upstream)
    assert len(sent) == 1
    assert sent[0]["task"] == ["Text Generation"]
    assert sent[0]["page"] == ["1"]


@pytest.mark.parametrize("cap, pages", [
    pytest.param(20, 2, id="per-page-capped-at-20"),
    pytest.param(10, 3, id="per-page-capped-at-10"),
    pytest.param(23, 1, id="per-page-capped-at-total"),
])
def test_search_total_count_decides_when_pages_are_short(search_client, upstream, cap, pages):
    serve_catalogue(upstream, per_page_cap=cap)
    records = search_client.search_models()
    assert [r["name"] for r in records] == [r["name"] for r in TEXT_GENERATION]
    assert [q["page"] for q in queries(upstream)] == [[str(n)] for n in range(1, pages + 1)]


def test_search_without_total_count_stops_at_short_page(search_client, upstream):
    serve_catalogue(upstream, per_page_cap=20, total=False)
    records = search_client.search_models()
    assert len(records) == 20  # the first page is short: the listing ends there
    assert len(upstream.calls) == 1


def test_search_without_total_count_pages_until_short_page(search_client, upstream):
    many = [{**TEXT_GENERATION[0], "name": f"@cf/test/model-{n}"}
            for n in range(CATALOGUE_PAGE_SIZE + 7)]
    serve_catalogue(upstream, records=many, total=False)
    records = search_client.search_models()
    assert len(records) == CATALOGUE_PAGE_SIZE + 7
    assert len(upstream.calls) == 2


def test_search_without_total_count_stops_at_empty_page(search_client, upstream):
    many = [{**TEXT_GENERATION[0], "name": f"@cf/test/model-{n}"}
            for n in range(CATALOGUE_PAGE_SIZE)]
    serve_catalogue(upstream, records=many, total=False)
    records = search_client.search_models()
    assert len(records) == CATALOGUE_PAGE_SIZE
    assert len(upstream.calls) == 2


def test_search_stops_when_total_count_reached_on_full_page(search_client, upstream):
    many = [{**TEXT_GENERATION[0], "name": f"@cf/test/model-{n}"}
            for n in range(CATALOGUE_PAGE_SIZE)]
    serve_catalogue(upstream, records=many)
    assert len(search_client.search_models()) == CATALOGUE_PAGE_SIZE
    assert len(upstream.calls) == 1


def test_search_stops_at_empty_page_despite_larger_total(search_client, upstream):
    upstream.add(responses.GET, SEARCH_URL,
                 json={**cf_ok(TEXT_GENERATION[:5]), "result_info": {"total_count": 500}})
    upstream.add(responses.GET, SEARCH_URL, json={**cf_ok([]), "result_info": {"total_count": 500}})
    assert len(search_client.search_models()) == 5
    assert len(upstream.calls) == 2


@pytest.mark.parametrize("body", [
    pytest.param({"success": False, "errors": [], "result": None}, id="success-false"),
    pytest.param({"success": True, "result": {"not": "a list"}}, id="result-not-list"),
    pytest.param(["not", "an", "object"], id="not-an-object"),
])
def test_search_unreadable_answer_is_upstream_error(search_client, upstream, body):
    upstream.add(responses.GET, SEARCH_URL, json=body)
    with pytest.raises(UpstreamError):
        search_client.search_models()


def test_catalogue_lists_only_served_tasks(search_client, upstream):
    """The canned page holds an embeddings model (served) and the gateway adds a translation
    model (a task it does not serve), which the catalogue must leave out."""
    translation = {**PAGE1["result"][0], "name": "@cf/meta/m2m100-1.2b",
                   "task": {"id": "f57b9e7b", "name": "Translation"}}
    page = {**PAGE1, "result": [*PAGE1["result"], translation]}
    upstream.add(responses.GET, SEARCH_URL, json=page)
    upstream.add(responses.GET, SEARCH_URL, json={**cf_ok([]), "result_info": {"total_count": 4}})
    catalogue = ModelCatalogue(search_client, TTL, [], clock=Clock())
    entries = catalogue.entries()
    assert [e["id"] for e in entries] == [LLAMA_70B, GEMMA, "@cf/baai/bge-base-en-v1.5"]
    assert [e["metadata"]["task"] for e in entries] == ["Text Generation", "Text Generation",
                                                        "Text Embeddings"]
    assert "task" not in queries(upstream)[0]


def test_catalogue_from_canned_page_has_int_context_windows(search_client, upstream):
    upstream.add(responses.GET, SEARCH_URL, json={**PAGE1, "result_info": {"total_count": 3}})
    entries = ModelCatalogue(search_client, TTL, [LLAMA_70B, GEMMA], clock=Clock()).entries()
    assert [e["metadata"]["context_window"] for e in entries] == [24000, 128000]
    assert entries[0]["created"] == utc_seconds("2024-12-06 17:09:18.338")


def test_catalogue_unconfigured_raises_503():
    config = {k: getattr(TestConfig, k) for k in dir(TestConfig) if k.isupper()}
    config["CLOUDFLARE_ACCOUNTS"] = []
    catalogue = ModelCatalogue(UpstreamClient(config), TTL, [], clock=Clock())
    with pytest.raises(ServiceUnavailableError):
        catalogue.records()


def test_expired_list_is_served_stale_while_one_request_refreshes():
    stub, clock = StubUpstream(TEXT_GENERATION[:2], TEXT_GENERATION[:3]), Clock()
    catalogue = ModelCatalogue(stub, TTL, [], clock=clock)
    assert len(catalogue.records()) == 2
    clock.now += TTL
    stub.delay = 0.5
    refresher = threading.Thread(target=catalogue.records)
    refresher.start()
    time.sleep(0.1)  # the refresher holds the lock now
    started = time.monotonic()
    assert len(catalogue.records()) == 2  # stale, at once
    assert time.monotonic() - started < 0.3
    refresher.join(5)
    assert len(catalogue.records()) == 3 and stub.calls == 2
