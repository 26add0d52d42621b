"""The state store interface (gateway/state/store.py): one behavioural suite, both stores.

Every test runs against a temporary SQLite file and against a real redis-server (started by
the session fixture). Tickets carry their own time, so windows and expiry are tested
without waiting; exactness under concurrency uses one store object (one connection) per
thread, as gunicorn workers each have their own.
"""
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.state import StateConfigError, StoreUnavailable, open_store
from gateway.state.store import Limits, Ticket

NOW = 1_800_000_000.0  # a fixed moment; the UTC date is 2027-01-15


@pytest.fixture
def store(store_url):
    opened = open_store(store_url)
    yield opened
    opened.close()


def record(name="alice", key_hash=None, **fields):
    return {"hash": key_hash or uuid.uuid4().hex * 2, "name": name, "models": [],
            "rpm": None, "tpm": None, "max_parallel": None, "daily_tokens": None,
            "created_at": int(NOW), "expires_at": None, **fields}


def ticket(rec, limits, now=NOW, estimate=0, hold=900.0):
    return Ticket(key_hash=rec["hash"], name=rec["name"], limits=limits, estimate=estimate,
                  now=now, id=uuid.uuid4().hex, hold=hold)


# -- documents --------------------------------------------------------------------------------

def test_json_documents_round_trip(store):
    value = {"id": "resp_1", "output": [{"type": "message", "text": "héllo"}], "n": 3}
    assert store.get_json("resp_1") is None
    store.put_json("resp_1", value, ttl=60)
    assert store.get_json("resp_1") == value
    store.put_json("resp_1", {"replaced": True})
    assert store.get_json("resp_1") == {"replaced": True}
    assert store.delete("resp_1") is True
    assert store.delete("resp_1") is False
    assert store.get_json("resp_1") is None


def test_json_documents_expire(store):
    store.put_json("short", [1, 2], ttl=0.3)
    store.put_json("long", [3], ttl=60)
    assert store.get_json("short") == [1, 2]
    time.sleep(0.5)
    assert store.get_json("short") is None
    assert store.delete("short") is False
    assert store.get_json("long") == [3]


# -- keys -------------------------------------------------------------------------------------

def test_keys_are_added_found_listed_and_removed(store):
    alice, bob = record("alice", rpm=5), record("bob", models=["@cf/meta/*"])
    assert store.add_key(alice) and store.add_key(bob)
    assert store.add_key(record("alice")) is False, "a taken name"
    assert store.find_key(alice["hash"]) == alice
    assert store.find_key("0" * 64) is None
    listed = store.list_keys()
    assert [k["name"] for k in listed] == ["alice", "bob"]
    assert listed[1]["models"] == ["@cf/meta/*"] and listed[0]["last_used_at"] is None
    removed = store.remove_key("alice")
    assert removed["name"] == "alice" and removed["rpm"] == 5
    assert store.remove_key("alice") is None
    assert store.find_key(alice["hash"]) is None
    assert [k["name"] for k in store.list_keys()] == ["bob"]
    assert store.add_key(record("alice")), "a revoked key's name can be given again"


# -- limits -----------------------------------------------------------------------------------

def test_rpm_admits_exactly_the_limit_then_refuses(store):
    rec = record(rpm=3)
    store.add_key(rec)
    limits = Limits(rpm=3)
    seen = [store.admit(ticket(rec, limits, now=NOW + i * 0.1)) for i in range(5)]
    assert [w.refused for w in seen] == [None, None, None, "requests", "requests"]
    assert [w.requests for w in seen] == [0, 1, 2, 3, 3]
    later = store.admit(ticket(rec, limits, now=NOW + 60.5))
    assert later.refused is None and later.requests == 0, "the window moved on"


def test_rpm_is_exact_under_concurrency(store_url):
    """100 requests at once from 10 connections: exactly 60 pass."""
    stores = [open_store(store_url) for _ in range(10)]
    rec = record(rpm=60)
    stores[0].add_key(rec)
    limits, start = Limits(rpm=60), threading.Barrier(10)

    def burst(store):
        start.wait()
        return [store.admit(ticket(rec, limits, now=time.time())).refused for _ in range(10)]

    with ThreadPoolExecutor(10) as pool:
        verdicts = [v for batch in pool.map(burst, stores) for v in batch]
    for store in stores:
        store.close()
    assert verdicts.count(None) == 60 and verdicts.count("requests") == 40


def test_tpm_books_the_estimate_and_settles_real_usage(store):
    rec = record(tpm=100)
    store.add_key(rec)
    limits = Limits(tpm=100)
    first = ticket(rec, limits, estimate=40)
    assert store.admit(first).refused is None
    second = ticket(rec, limits, now=NOW + 1, estimate=40)
    assert store.admit(second).tokens == 40
    assert store.admit(ticket(rec, limits, now=NOW + 2, estimate=40)).refused == "tokens"
    store.settle(first, 5, 10, "@cf/meta/llama-3.1-8b-instruct")  # 15 real for 40 booked
    window = store.admit(ticket(rec, limits, now=NOW + 3, estimate=40))
    assert window.refused is None and window.tokens == 55
    assert [(b[0], b[2]) for b in window.buckets] == [(int(NOW), 15), (int(NOW) + 1, 40)]


def test_a_request_larger_than_tpm_passes_an_empty_window(store):
    rec = record(tpm=50)
    store.add_key(rec)
    assert store.admit(ticket(rec, Limits(tpm=50), estimate=500)).refused is None
    assert store.admit(ticket(rec, Limits(tpm=50), now=NOW + 1, estimate=1)).refused == "tokens"


def test_max_parallel_counts_open_requests(store):
    rec = record(max_parallel=2)
    store.add_key(rec)
    limits = Limits(max_parallel=2)
    a, b = ticket(rec, limits), ticket(rec, limits)
    assert store.admit(a).refused is None and store.admit(b).refused is None
    assert store.admit(ticket(rec, limits)).refused == "parallel"
    store.settle(a, 1, 1, "m")
    window = store.admit(ticket(rec, limits))
    assert window.refused is None and window.open_requests == 1


def test_an_unsettled_slot_lapses(store):
    """A worker that died mid-request does not hold its slot for ever."""
    rec = record(max_parallel=1)
    store.add_key(rec)
    limits = Limits(max_parallel=1)
    assert store.admit(ticket(rec, limits, hold=30)).refused is None
    assert store.admit(ticket(rec, limits, now=NOW + 29)).refused == "parallel"
    assert store.admit(ticket(rec, limits, now=NOW + 31)).refused is None


def test_daily_budget(store):
    rec = record(daily_tokens=100)
    store.add_key(rec)
    limits = Limits(daily_tokens=100)
    first = ticket(rec, limits)
    assert store.admit(first).refused is None
    store.settle(first, 60, 40, "m")
    spent = store.admit(ticket(rec, limits, now=NOW + 5))
    assert spent.refused == "quota" and spent.daily_tokens == 100
    assert store.admit(ticket(rec, limits, now=NOW + 86400)).refused is None, "a new UTC day"


def test_a_removed_key_is_refused_as_revoked(store):
    rec = record()
    store.add_key(rec)
    assert store.admit(ticket(rec, Limits())).refused is None
    store.remove_key(rec["name"])
    assert store.admit(ticket(rec, Limits())).refused == "revoked"


def test_usage_per_name_day_and_model(store):
    alice, bob = record("alice"), record("bob")
    store.add_key(alice)
    store.add_key(bob)
    today = time.time()
    for rec, model, now, tokens in [(alice, "m1", today, (3, 4)), (alice, "m1", today, (1, 1)),
                                    (alice, "m2", today, (2, 0)), (bob, "m1", today, (5, 5)),
                                    (alice, "m1", today - 86400, (7, 7))]:
        admitted = ticket(rec, Limits(), now=now)
        store.admit(admitted)
        store.settle(admitted, *tokens, model)
    day = time.strftime("%Y-%m-%d", time.gmtime(today))
    yesterday = time.strftime("%Y-%m-%d", time.gmtime(today - 86400))
    rows = store.usage(yesterday, "alice")
    assert rows == [
        {"name": "alice", "date": yesterday, "model": "m1", "requests": 1, "prompt_tokens": 7,
         "completion_tokens": 7},
        {"name": "alice", "date": day, "model": "m1", "requests": 2, "prompt_tokens": 4,
         "completion_tokens": 5},
        {"name": "alice", "date": day, "model": "m2", "requests": 1, "prompt_tokens": 2,
         "completion_tokens": 0}]
    assert {r["name"] for r in store.usage(day)} == {"alice", "bob"}
    assert store.list_keys()[0]["last_used_at"] is not None


# -- accounts ---------------------------------------------------------------------------------

def test_accounts_out_until_due(store):
    store.mark_account("acct-a", NOW + 100, "quota")
    store.mark_account("acct-b", NOW + 10, "token")
    assert store.accounts_out(NOW) == {"acct-a": (NOW + 100, "quota"),
                                       "acct-b": (NOW + 10, "token")}
    assert store.accounts_out(NOW + 50) == {"acct-a": (NOW + 100, "quota")}


# -- failures ---------------------------------------------------------------------------------

def test_an_unreachable_redis_fails_fast_and_is_skipped_for_a_while():
    from tests.redis_server import free_port
    store = open_store(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    with pytest.raises(StoreUnavailable):
        store.get_json("x")
    assert not store.available
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.find_key("0" * 64)
    assert time.monotonic() - started < 0.05, "no new attempt right after a failure"


def test_a_redis_restart_is_survived(redis_server, tmp_path):
    store = open_store(redis_server.url)
    store.put_json("doc", {"a": 1})
    store.retry_after = 0.1
    redis_server.kill()
    with pytest.raises(StoreUnavailable):
        store.get_json("doc")
    redis_server.start()
    time.sleep(0.2)
    assert store.get_json("doc") == {"a": 1}, "the append-only file kept it"
    assert store.available


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/a-file/state.db", "sqlite:////proc/no/state.db"],
                         ids=["below-a-file", "proc"])
def test_an_unwritable_sqlite_path_names_state_url(url, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(StateConfigError, match="STATE_URL"):
        open_store(url.format(tmp=tmp_path))


@pytest.mark.parametrize("url", ["postgres://db/x", "sqlite:///"], ids=["scheme", "no-path"])
def test_an_unusable_state_url_names_it(url):
    with pytest.raises(StateConfigError, match="STATE_URL"):
        open_store(url)
