"""Stored responses (gateway/state/responses.py) on both state stores: owner-scoped, with a TTL."""
import time

import pytest

from gateway.errors import ServiceUnavailableError
from gateway.state import StoreUnavailable, open_store
from gateway.state.responses import StoredResponses


@pytest.fixture
def store(store_url):
    state = open_store(store_url)
    yield state
    state.close()


def test_only_the_owner_finds_or_removes_a_response(store):
    responses = StoredResponses(store, ttl=60)
    responses.save("owner-a", {"id": "resp_1", "output": ["é"]}, [{"id": "msg_1"}])
    assert responses.find("owner-a", "resp_1") == {
        "owner": "owner-a", "response": {"id": "resp_1", "output": ["é"]},
        "items": [{"id": "msg_1"}]}
    assert responses.find("owner-b", "resp_1") is None
    assert responses.remove("owner-b", "resp_1") is False
    assert responses.remove("owner-a", "resp_1") is True
    assert responses.find("owner-a", "resp_1") is None
    assert responses.remove("owner-a", "resp_1") is False


def test_responses_expire_after_their_ttl(store):
    responses = StoredResponses(store, ttl=0.2)
    responses.save("owner", {"id": "resp_1"}, [])
    assert responses.find("owner", "resp_1") is not None
    time.sleep(0.5)
    assert responses.find("owner", "resp_1") is None


class Unreachable:
    def put_json(self, *args):
        raise StoreUnavailable("ConnectionError: refused")

    get_json = delete = put_json


def test_an_unreachable_store_is_a_503_on_reads_and_a_log_line_on_writes(caplog):
    responses = StoredResponses(Unreachable(), ttl=60)
    responses.save("owner", {"id": "resp_1"}, [])
    assert "resp_1 not stored" in caplog.text
    for call in (responses.find, responses.remove):
        with pytest.raises(ServiceUnavailableError) as caught:
            call("owner", "resp_1")
        assert caught.value.code == "state_store_unavailable"
