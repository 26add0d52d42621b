"""The worker's memory of stored keys (gateway/state/keys.py `KeyRing`, `well_formed`).

Wrong `sk-cf-` keys must not cost a store lookup per request: a malformed one costs none,
one the store did not know is remembered (by hash, for UNKNOWN_FOR seconds, at most
UNKNOWN_MAX of them), and a key made meanwhile is accepted within UNKNOWN_FOR.
"""
import pytest

from gateway import create_app
from gateway.state import keys
from gateway.state.keys import KeyRing, digest, new_record, new_secret, well_formed
from gateway.state.store import StoreUnavailable
from tests.conftest import Clock, TestConfig
from tests.openai_spec import validate_error


class Store:
    """Key records by hash; counts the lookups; `down` makes every lookup fail."""

    def __init__(self):
        self.records, self.lookups, self.down = {}, 0, False

    def find_key(self, key_hash):
        self.lookups += 1
        if self.down:
            raise StoreUnavailable("down")
        return self.records.get(key_hash)

    def add(self, secret):
        record = {**new_record({"name": "n"})[1], "hash": digest(secret)}
        self.records[record["hash"]] = record


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store():
    return Store()


@pytest.fixture
def ring(store, clock):
    return KeyRing(store, clock=clock)


def test_an_unknown_key_is_looked_up_once_per_ttl(ring, store, clock):
    unknown = digest(new_secret())
    assert [ring.find(unknown, "l", fresh=fresh) for fresh in (False, True) * 20] == [None] * 40
    assert store.lookups == 1
    clock.now += keys.UNKNOWN_FOR
    assert ring.find(unknown, "l") is None and store.lookups == 2


def test_a_key_made_after_it_was_refused_works_within_the_ttl(ring, store, clock):
    secret = new_secret()
    assert ring.find(digest(secret), "l") is None
    store.add(secret)
    clock.now += keys.UNKNOWN_FOR - 0.5
    assert ring.find(digest(secret), "l") is None, "still remembered as unknown"
    clock.now += 0.5
    assert ring.find(digest(secret), "l").key_hash == digest(secret)
    assert ring.find(digest(secret), "l", fresh=True) is not None


def test_the_unknown_keys_remembered_are_bounded(ring, store):
    hashes = [digest(new_secret()) for _ in range(keys.UNKNOWN_MAX + 10)]
    for key_hash in hashes:
        ring.find(key_hash, "l")
    assert len(ring._unknown) == keys.UNKNOWN_MAX
    assert all(len(h) == 64 for h in ring._unknown), "hashes only, never a key"
    lookups = store.lookups
    ring.find(hashes[-1], "l")
    assert store.lookups == lookups, "the newest are kept"
    ring.find(hashes[0], "l")
    assert store.lookups == lookups + 1, "the oldest went first"


def test_a_store_that_is_down_is_not_taken_for_unknown(ring, store):
    secret = new_secret()
    store.add(secret)
    store.down = True
    with pytest.raises(StoreUnavailable):
        ring.find(digest(secret), "l")
    store.down = False
    assert ring.find(digest(secret), "l") is not None


@pytest.mark.parametrize("secret", [
    pytest.param("sk-cf-", id="prefix-only"),
    pytest.param("sk-cf-made-up", id="short"),
    pytest.param("sk-cf-" + "A" * 42, id="one-short"),
    pytest.param("sk-cf-" + "A" * 44, id="one-long"),
    pytest.param("sk-cf-" + "A" * 42 + "=", id="padding"),
    pytest.param("sk-cf-" + "A" * 42 + "é", id="non-ascii"),
    pytest.param("sk-cf-" + "A" * 42 + "\n", id="newline"),
])
def test_malformed_keys_are_refused_without_a_lookup(secret):
    assert not well_formed(secret)


def test_every_new_key_is_well_formed():
    assert all(well_formed(new_secret()) for _ in range(200))


@pytest.fixture
def app(store_url):
    class Config(TestConfig):
        STATE_URL = store_url
    return create_app(Config)


@pytest.mark.parametrize("secret", [
    pytest.param("sk-cf-made-up-key", id="malformed"),
    pytest.param("sk-cf-" + "Q" * 43, id="well-formed"),
])
def test_a_flood_of_a_wrong_key_costs_at_most_one_lookup(app, upstream, gateway_logs,
                                                         monkeypatch, secret):
    store = app.extensions["state"]
    lookups = []
    find_key = store.find_key
    monkeypatch.setattr(store, "find_key", lambda h: lookups.append(h) or find_key(h))
    client = app.test_client()
    auth = {"Authorization": f"Bearer {secret}"}
    answers = [client.post("/v1/chat/completions", headers=auth, json={
        "model": "@cf/meta/llama-3.1-8b-instruct",
        "messages": [{"role": "user", "content": "hi"}]}) for _ in range(25)]
    answers += [client.get("/v1/models", headers=auth) for _ in range(25)]
    for rv in answers:
        assert rv.status_code == 401
        validate_error(rv.get_json())
        assert rv.get_json()["error"]["code"] == "invalid_api_key"
        assert secret not in rv.get_data(as_text=True)
    assert lookups == ([] if secret == "sk-cf-made-up-key" else [digest(secret)])
    assert len(upstream.calls) == 0, "nothing upstream"
    assert not any(secret in line for line in gateway_logs)
