"""Stored keys under the real server: gunicorn + gevent workers, the fake Workers AI, and
the state store as a temp SQLite file or a real redis-server (same tests on both).

Exactness across 2 workers and across two gateway processes ("hosts") on one Redis, open
streams against max_parallel (a client that leaves early frees its slot and is charged),
tpm from the usage the fake reports, revocation seen by every worker, the account pool
shared through the store, Redis killed and restarted mid-run, an unwritable SQLite path.
"""
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.fake_workers_ai import FakeWorkersAI
from tests.redis_server import RedisServer
from tests.servers import run_gateway
from tests.sse_client import read_events

ENV_KEY = "sk-e2e-keys-env-0123456789"
ADMIN = "admin-e2e-token-abcdef"
ACCOUNTS = {"acct-a": "tok-a-secret-111", "acct-b": "tok-b-secret-222"}
MODEL = "@cf/meta/llama-3.1-8b-instruct"
REQUEST_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                   "x-ratelimit-reset-requests")


@pytest.fixture(scope="module")
def fake():
    with FakeWorkersAI(accounts=ACCOUNTS) as server:
        yield server


@pytest.fixture(autouse=True)
def clean_fake(fake):
    fake.reset()


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("redis-e2e")) as server:
        yield server


def settings(fake, state_url, **extra):
    return {"API_KEYS": ENV_KEY, "ADMIN_TOKEN": ADMIN, "STATE_URL": state_url,
            "CLOUDFLARE_ACCOUNTS": ",".join(f"{a}:{t}" for a, t in ACCOUNTS.items()),
            "CLOUDFLARE_API_BASE": fake.base_url, "MODELS": MODEL, "UPSTREAM_RETRIES": "0",
            **extra}


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def gateway(request, fake, tmp_path_factory):
    """One gateway with 2 workers per store kind, for the whole module."""
    folder = tmp_path_factory.mktemp(f"keys-e2e-{request.param}")
    url = (f"sqlite:///{folder}/state.db" if request.param == "sqlite"
           else request.getfixturevalue("redis").url)
    log_path = folder / "gateway.log"
    with run_gateway(settings(fake, url), log_path, workers=2) as (base_url, _):
        yield base_url, log_path
    log = log_path.read_text(errors="replace")
    assert "Traceback" not in log, log
    for secret in (ENV_KEY, ADMIN, *ACCOUNTS.values()):
        assert secret not in log


def new_key(base_url, **limits):
    name = f"k-{uuid.uuid4().hex[:10]}"
    rv = requests.post(f"{base_url}/admin/keys", json={"name": name, **limits},
                       headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert rv.status_code == 201, rv.text
    return name, rv.json()["key"]


def chat(base_url, key, text="hello there", stream=False, **extra):
    """One request on a fresh connection (so requests spread over the workers)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": stream,
            **extra}
    return requests.post(f"{base_url}/v1/chat/completions", json=body, stream=stream,
                         headers={"Authorization": f"Bearer {key}",
                                  "Connection": "close"}, timeout=60)


def burst(base_urls, key, count):
    """`count` requests at once, spread over `base_urls`: the responses."""
    def one(i):
        return chat(base_urls[i % len(base_urls)], key)
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def usage_of(base_url, name):
    rv = requests.get(f"{base_url}/admin/usage", params={"name": name, "days": 1},
                      headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    return rv.json()["data"]


def assert_exactly_60_of_100(responses):
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 60 and statuses.count(429) == 40, statuses
    for refused in (r for r in responses if r.status_code == 429):
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert all(refused.headers.get(h) for h in REQUEST_HEADERS)
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert int(refused.headers["Retry-After"]) >= 1
    remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"])
                       for r in responses if r.status_code == 200)
    assert remaining == list(range(60)), "each admitted request saw its own count"


def test_rpm_is_exact_across_two_workers(gateway):
    base_url, _ = gateway
    _, key = new_key(base_url, rpm=60)
    assert_exactly_60_of_100(burst([base_url], key, 100))


def test_max_parallel_three_of_ten_streams(gateway, fake):
    base_url, _ = gateway
    _, key = new_key(base_url, max_parallel=3)
    text = "[[tokens=10]] [[delay=0.3]] go"  # each admitted stream stays open about 3 s

    def one(_):
        rv = chat(base_url, key, text=text, stream=True)
        events = read_events(rv) if rv.status_code == 200 else None
        return rv, events

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(one, range(10)))
    statuses = [rv.status_code for rv, _ in results]
    assert statuses.count(200) == 3 and statuses.count(429) == 7, statuses
    for rv, events in results:
        if rv.status_code == 200:
            assert events[-1] == "[DONE]"
        else:
            assert rv.json()["error"]["code"] == "rate_limit_exceeded"
    again = [chat(base_url, key, stream=True) for _ in range(3)]
    assert [r.status_code for r in again] == [200] * 3, "finished streams freed their slots"
    for rv in again:
        rv.close()


def test_a_client_that_leaves_frees_its_slot_and_is_charged(gateway, fake):
    base_url, _ = gateway
    name, key = new_key(base_url, max_parallel=1)
    rv = chat(base_url, key, text="[[tokens=100]] [[delay=0.1]] go", stream=True)
    assert rv.status_code == 200
    streamed = 0
    for line in rv.iter_lines():
        streamed += b'"content":"' in line and b'"content":""' not in line
        if streamed == 4:
            break
    rv.close()  # the client leaves with 96 tokens to go
    deadline = time.monotonic() + 20
    while True:
        follow = chat(base_url, key, text="[[tokens=3]] go")
        if follow.status_code == 200:
            break
        assert follow.status_code == 429 and time.monotonic() < deadline, follow.text
        time.sleep(0.25)
    rows = usage_of(base_url, name)
    assert rows[0]["requests"] == 2
    assert 3 + 3 <= rows[0]["completion_tokens"] < 3 + 100, "charged for what was streamed"
    assert rows[0]["prompt_tokens"] > 0


def test_tpm_trips_after_the_tokens_the_fake_reported(gateway):
    base_url, _ = gateway
    _, key = new_key(base_url, tpm=100)
    body = {"text": "[[tokens=30]] go", "max_tokens": 40}
    first = chat(base_url, key, stream=True, stream_options={"include_usage": True}, **body)
    estimate = 100 - int(first.headers["x-ratelimit-remaining-tokens"])
    events = read_events(first)
    reported = events[-2]["usage"]["total_tokens"]
    assert reported != estimate, "the test must tell the estimate from the usage"
    second = chat(base_url, key, **body)
    assert second.status_code == 200
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == 100 - reported - estimate
    used = reported + second.json()["usage"]["total_tokens"]
    third = chat(base_url, key, **body)
    assert third.status_code == (429 if used + estimate > 100 else 200)
    assert third.status_code == 429, "30-token answers trip a 100 tpm on the third"
    assert third.json()["error"]["type"] == "tokens"
    assert int(third.headers["x-ratelimit-remaining-tokens"]) == 100 - used


def test_revoked_key_stops_on_every_worker(gateway):
    base_url, _ = gateway
    name, key = new_key(base_url)
    assert [r.status_code for r in burst([base_url], key, 20)] == [200] * 20
    rv = requests.delete(f"{base_url}/admin/keys/{name}",
                         headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert rv.status_code == 200
    after = burst([base_url], key, 20)
    assert [r.status_code for r in after] == [401] * 20, "well within 60 s: at once"
    listing = requests.get(f"{base_url}/v1/models", headers={"Authorization": f"Bearer {key}"},
                           timeout=10)
    assert listing.status_code == 401


def test_spent_account_is_skipped_by_every_worker(gateway, fake):
    base_url, _ = gateway
    fake.add_fault("error", times=None, account="acct-a", code=3036)
    for _ in range(4):  # each worker starts its round robin on acct-a
        assert chat(base_url, ENV_KEY).status_code == 200
        if any(r.account == "acct-a" for r in fake.requests):
            break
    assert any(r.account == "acct-a" for r in fake.requests), "one request met 3036 on A"
    seen = len(fake.requests)
    with ThreadPoolExecutor(10) as pool:
        statuses = [r.status_code for r in pool.map(lambda _: chat(base_url, ENV_KEY), range(20))]
    assert statuses == [200] * 20
    later = fake.requests[seen:]
    assert len(later) == 20 and {r.account for r in later} == {"acct-b"}


def test_log_lines_and_metrics_carry_the_key_name(gateway):
    base_url, log_path = gateway
    name, key = new_key(base_url, rpm=1000)
    assert chat(base_url, key).status_code == 200
    time.sleep(0.3)
    entries = [json.loads(line) for line in log_path.read_text().splitlines()
               if line.startswith("{") and '"gateway.request"' in line]
    mine = [e for e in entries if e.get("key_name") == name]
    assert mine and mine[-1]["status"] == 200 and key not in log_path.read_text()
    scrape = requests.get(f"{base_url}/metrics", timeout=10).text
    assert f'gateway_key_requests_total{{key_name="{name}",status="200"}} 1.0' in scrape
    assert f'gateway_key_tokens_total{{direction="completion",key_name="{name}"}}' in scrape


# -- Redis only -------------------------------------------------------------------------------

def test_rpm_is_exact_across_two_hosts_on_one_redis(fake, redis, tmp_path):
    with (run_gateway(settings(fake, redis.url), tmp_path / "host1.log") as (one, _),
          run_gateway(settings(fake, redis.url), tmp_path / "host2.log") as (two, _)):
        _, key = new_key(one, rpm=60)
        assert_exactly_60_of_100(burst([one, two], key, 100))


def test_redis_killed_and_restarted_mid_run(fake, tmp_path):
    with RedisServer(tmp_path / "redis") as server, \
            run_gateway(settings(fake, server.url, STATE_TIMEOUT="0.2"),
                        tmp_path / "gateway.log", workers=1) as (base_url, _):
        _, key = new_key(base_url, rpm=5)
        assert [chat(base_url, key).status_code for _ in range(6)] == [200] * 5 + [429]
        server.kill()
        served = [chat(base_url, key).status_code for _ in range(10)]
        served += [chat(base_url, ENV_KEY).status_code for _ in range(3)]
        assert served == [200] * 13, "served without limits while the store is down"
        scrape = requests.get(f"{base_url}/metrics", timeout=10).text
        assert "gateway_state_store_up 0.0" in scrape
        server.start()
        deadline, statuses = time.monotonic() + 15, []
        while not statuses or statuses[-1] != 429:
            assert time.monotonic() < deadline, statuses
            statuses.append(chat(base_url, key).status_code)
            time.sleep(0.1)
        assert set(statuses) <= {200, 429}, "never a 5xx"
        log = (tmp_path / "gateway.log").read_text()
    assert log.count("state store unreachable") == 1, "one warning a minute"
    assert "Traceback" not in log


# -- SQLite only ------------------------------------------------------------------------------

def test_unwritable_sqlite_path_fails_start_up_naming_state_url(fake, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    url = f"sqlite:///{tmp_path}/a-file/state.db"
    with pytest.raises(RuntimeError, match="exited"):
        with run_gateway(settings(fake, url), tmp_path / "gateway.log"):
            pass
    log = (tmp_path / "gateway.log").read_text()
    assert "STATE_URL" in log and "a-file/state.db" in log
