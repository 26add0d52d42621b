"""The pool of Cloudflare accounts (gateway/cloudflare/accounts.py): round robin, quota, cool-down.

Every test drives the pool with an injected clock, so nothing waits for real time.
"""
import calendar
import logging
import threading
from collections import Counter
from datetime import datetime, UTC

import pytest

from gateway.cloudflare.accounts import AccountPool, next_utc_midnight
from gateway.errors import QuotaExceededError, ServiceUnavailableError
from tests.conftest import Clock

CREDENTIALS = [("a1", "t1-token-secret"), ("a2", "t2-token-secret"), ("a3", "t3-token-secret")]
COOLDOWN = 300.0


def utc(*parts):
    """Unix seconds of a UTC date and time."""
    return float(calendar.timegm(datetime(*parts, tzinfo=UTC).utctimetuple()))


@pytest.fixture
def clock():
    return Clock(utc(2026, 11, 28, 10, 0, 0))


@pytest.fixture
def pool(clock):
    return AccountPool(CREDENTIALS, cooldown=COOLDOWN, clock=clock)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def gateway_records():
    """The records of the `gateway` loggers, whether or not an app made them stop propagating."""
    logger = logging.getLogger("gateway")
    handler = _Records()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)


def positions(pool, count, **kwargs):
    return [pool.acquire(**kwargs).position for _ in range(count)]


# ---------------------------------------------------------------- next_utc_midnight


@pytest.mark.parametrize("now, expected", [
    pytest.param(utc(2026, 11, 28, 23, 59, 59), utc(2026, 11, 29), id="one-second-before"),
    pytest.param(utc(2026, 11, 28, 23, 59, 59) + 0.999, utc(2026, 11, 29), id="fraction-before"),
    pytest.param(utc(2026, 11, 28, 0, 0, 1), utc(2026, 11, 29), id="just-after-midnight"),
    pytest.param(utc(2026, 11, 28, 12, 34, 56), utc(2026, 11, 29), id="midday"),
    pytest.param(utc(2026, 11, 28), utc(2026, 11, 29), id="exactly-midnight"),
    pytest.param(utc(2026, 11, 30, 18), utc(2026, 12, 1), id="end-of-month"),
    pytest.param(utc(2026, 12, 31, 23, 30), utc(2027, 1, 1), id="end-of-year"),
    pytest.param(utc(2028, 2, 28, 8), utc(2028, 2, 29), id="leap-day"),
])
def test_next_utc_midnight_is_next_day_at_0000_utc(now, expected):
    assert next_utc_midnight(now) == expected


def test_next_utc_midnight_ignores_local_time_zone(monkeypatch):
    import time
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14: a different local date
    time.tzset()
    try:
        assert next_utc_midnight(utc(2026, 11, 28, 23, 59, 59)) == utc(2026, 11, 29)
    finally:
        monkeypatch.undo()
        time.tzset()


# ---------------------------------------------------------------- round robin


def test_acquire_goes_round_robin(pool):
    assert positions(pool, 7) == [0, 1, 2, 0, 1, 2, 0]


def test_acquire_hands_out_credentials_of_each_account(pool):
    accounts = [pool.acquire() for _ in range(3)]
    assert [(a.account_id, a.token) for a in accounts] == CREDENTIALS


def test_acquire_single_account_always_same(clock):
    pool = AccountPool(CREDENTIALS[:1], cooldown=COOLDOWN, clock=clock)
    assert positions(pool, 4) == [0, 0, 0, 0]


def test_acquire_round_robin_is_fair_across_threads(clock):
    pool = AccountPool(CREDENTIALS, cooldown=COOLDOWN, clock=clock)
    counts = Counter()
    lock = threading.Lock()

    def worker():
        for _ in range(100):
            position = pool.acquire().position
            with lock:
                counts[position] += 1

    threads = [threading.Thread(target=worker) for _ in range(9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts == {0: 300, 1: 300, 2: 300}


@pytest.mark.parametrize("out", [0, 1, 2])
def test_acquire_round_robin_stays_even_over_healthy_accounts(pool, out):
    pool.token_refused(pool.accounts[out])
    got = positions(pool, 12)
    healthy = [p for p in range(3) if p != out]
    assert Counter(got) == {healthy[0]: 6, healthy[1]: 6}, got
    assert all(x != y for x, y in zip(got, got[1:])), got


@pytest.mark.parametrize("exclude, allowed", [
    pytest.param({0}, {1, 2}, id="first"),
    pytest.param({1}, {0, 2}, id="middle"),
    pytest.param({0, 2}, {1}, id="two"),
    pytest.param((), {0, 1, 2}, id="none"),
])
def test_acquire_skips_excluded_accounts(pool, exclude, allowed):
    got = positions(pool, 6, exclude=exclude)
    assert set(got) == allowed


def test_acquire_excluding_every_account_raises(pool):
    with pytest.raises(ServiceUnavailableError):
        pool.acquire(exclude={0, 1, 2})


def test_len_and_secrets(pool):
    assert len(pool) == 3
    assert set(pool.secrets) == {part for pair in CREDENTIALS for part in pair}


# ---------------------------------------------------------------- quota used up (3036)


def test_quota_used_up_sidelines_account_until_utc_midnight(pool, clock):
    pool.quota_used_up(pool.accounts[0])
    assert pool.accounts[0].out_until == utc(2026, 11, 29)
    assert 0 not in positions(pool, 6)
    clock.now = utc(2026, 11, 28, 23, 59, 59)
    assert 0 not in positions(pool, 6)
    clock.now = utc(2026, 11, 29)
    assert 0 in positions(pool, 3)


def test_quota_used_up_on_every_account_raises_429(pool, clock):
    for account in pool.accounts:
        pool.quota_used_up(account)
    clock.now = utc(2026, 11, 28, 21, 30, 0)
    with pytest.raises(QuotaExceededError) as info:
        pool.acquire()
    error = info.value
    assert error.status == 429
    assert error.code == "insufficient_quota"
    assert error.type == "insufficient_quota"
    assert error.headers["x-should-retry"] == "false"
    assert "00:00 UTC" in error.message
    assert "2 h 30 min" in error.message


def test_quota_message_names_no_account_or_token(pool):
    for account in pool.accounts:
        pool.quota_used_up(account)
    with pytest.raises(QuotaExceededError) as info:
        pool.acquire()
    for secret in pool.secrets:
        assert secret not in info.value.message


# ---------------------------------------------------------------- token refused (10000)


def test_token_refused_sidelines_account_for_cooldown(pool, clock):
    start = clock.now
    pool.token_refused(pool.accounts[1])
    assert 1 not in positions(pool, 6)
    clock.now = start + COOLDOWN - 1
    assert 1 not in positions(pool, 6)
    clock.now = start + COOLDOWN
    assert 1 in positions(pool, 3)


def test_token_refused_logs_error_with_account_id_never_token(pool, gateway_records):
    pool.token_refused(pool.accounts[0])
    errors = [r for r in gateway_records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    text = errors[0].getMessage()
    assert "a1" in text
    assert "t1-token-secret" not in text
    assert all("t1-token-secret" not in r.getMessage() for r in gateway_records)


def test_quota_used_up_logs_account_id_never_token(pool, gateway_records):
    pool.quota_used_up(pool.accounts[2])
    assert any("a3" in r.getMessage() for r in gateway_records)
    assert all("t3-token-secret" not in r.getMessage() for r in gateway_records)


@pytest.mark.parametrize("elapsed, expected", [
    pytest.param(0.0, "300", id="fresh"),
    pytest.param(100.0, "200", id="later"),
    pytest.param(299.5, "1", id="half-second-left"),
])
def test_every_token_refused_raises_503_with_retry_after(pool, clock, elapsed, expected):
    start = clock.now
    for account in pool.accounts:
        pool.token_refused(account)
    clock.now = start + elapsed
    with pytest.raises(ServiceUnavailableError) as info:
        pool.acquire()
    error = info.value
    assert error.status == 503
    assert error.headers["Retry-After"] == expected
    for secret in pool.secrets:
        assert secret not in error.message


def test_mixed_quota_and_refused_raises_503_with_retry_after(pool, clock):
    pool.quota_used_up(pool.accounts[0])
    pool.token_refused(pool.accounts[1])
    pool.token_refused(pool.accounts[2])
    with pytest.raises(ServiceUnavailableError) as info:
        pool.acquire()
    assert info.value.status == 503
    assert info.value.headers["Retry-After"] == "300"
