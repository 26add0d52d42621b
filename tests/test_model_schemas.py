"""The per-worker cache of model schemas (gateway/cloudflare/model_schemas.py)."""
import threading
import time

import pytest

from gateway.cloudflare.model_schemas import RETRY_AFTER_FAILURE, ModelSchemas
from gateway.errors import UpstreamError
from tests.conftest import Clock
from tests.fake_model_families import classic_tools

MODEL = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"


class Upstream:
    """Counts schema calls; `fail` makes the next calls raise, `pause` slows them down."""

    def __init__(self, schema=None):
        self.schema = schema or classic_tools()
        self.calls = 0
        self.fail = False
        self.pause = 0.0

    def model_schema(self, model):
        self.calls += 1
        time.sleep(self.pause)
        if self.fail:
            raise UpstreamError("down")
        return self.schema


class Catalogue:
    def __init__(self, records):
        self.records = records

    def record(self, name):
        return self.records.get(name)


@pytest.fixture
def clock():
    return Clock()


def test_cold_cache_makes_one_call_for_concurrent_requests(clock):
    upstream = Upstream()
    upstream.pause = 0.2
    schemas = ModelSchemas(upstream, 300, clock=clock)
    results = []
    threads = [threading.Thread(target=lambda: results.append(schemas.get(MODEL)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert upstream.calls == 1
    assert all(result == upstream.schema for result in results) and len(results) == 8


def test_cached_until_ttl_then_refreshed(clock):
    upstream = Upstream()
    schemas = ModelSchemas(upstream, 300, clock=clock)
    assert schemas.get(MODEL) == upstream.schema
    clock.now += 299
    schemas.get(MODEL)
    assert upstream.calls == 1
    clock.now += 2
    schemas.get(MODEL)
    assert upstream.calls == 2


def test_stale_schema_served_when_refresh_fails(clock):
    upstream = Upstream()
    schemas = ModelSchemas(upstream, 300, clock=clock)
    first = schemas.get(MODEL)
    upstream.fail = True
    clock.now += 301
    assert schemas.get(MODEL) == first
    assert schemas.get(MODEL) == first and upstream.calls == 2  # no retry storm
    clock.now += RETRY_AFTER_FAILURE + 0.1
    upstream.fail = False
    assert schemas.get(MODEL) == first and upstream.calls == 3


def test_unreadable_schema_is_none_and_retried_later(clock):
    upstream = Upstream()
    upstream.fail = True
    schemas = ModelSchemas(upstream, 300, clock=clock)
    assert schemas.get(MODEL) is None
    assert schemas.get(MODEL) is None and upstream.calls == 1
    clock.now += RETRY_AFTER_FAILURE + 0.1
    upstream.fail = False
    assert schemas.get(MODEL) == upstream.schema and upstream.calls == 2


def test_models_are_cached_separately(clock):
    upstream = Upstream()
    schemas = ModelSchemas(upstream, 300, clock=clock)
    schemas.get(MODEL)
    schemas.get("@cf/other/model")
    schemas.get(MODEL)
    assert upstream.calls == 2


def test_capabilities_combine_schema_and_catalogue(clock):
    record = {"properties": [{"property_id": "function_calling", "value": "false"},
                             {"property_id": "reasoning", "value": "true"}]}
    schemas = ModelSchemas(Upstream(), 300, Catalogue({MODEL: record}), clock=clock)
    capabilities = schemas.capabilities(MODEL)
    assert capabilities.known and capabilities.tool_form == "openai"
    assert capabilities.tools is False  # the catalogue says no, whatever the schema has
    assert capabilities.reasoning is True


def test_capabilities_without_schema_are_unknown(clock):
    upstream = Upstream()
    upstream.fail = True
    schemas = ModelSchemas(upstream, 300, Catalogue({}), clock=clock)
    assert schemas.capabilities(MODEL).summary() == {
        "tools": False, "json_mode": False, "stop": True, "vision": False, "reasoning": False,
        "streaming": True}
