"""What happens after a failed upstream attempt (gateway/cloudflare/retry.py): move on, retry, give up.

`verdict` is pinned on the errors `map_error` really builds (and on the network errors
the upstream client raises); `backoff` on its schedule, its jitter and Retry-After.
"""
import math

import pytest

from gateway.cloudflare import retry
from gateway.cloudflare.error_map import map_error
from gateway.errors import RateLimitError, UpstreamError, UpstreamTimeoutError
from tests.conftest import MODEL, load_data


def cf_error(code, message="Something went wrong"):
    """Cloudflare's v4 error envelope."""
    return {"result": None, "success": False, "errors": [{"code": code, "message": message}],
            "messages": []}


def mapped(status, body):
    return map_error(status, body, model=MODEL)


# ---------------------------------------------------------------- verdict


VERDICTS = [
    # This account cannot serve: the next one is tried at once.
    pytest.param(mapped(429, load_data("cf_error_3036.json")), retry.MOVE_ON, id="3036"),
    pytest.param(mapped(401, load_data("cf_error_10000.json")), retry.MOVE_ON, id="10000-on-401"),
    pytest.param(mapped(403, load_data("cf_error_10000.json")), retry.MOVE_ON, id="10000-on-403"),
    pytest.param(mapped(400, cf_error(10000, "Authentication error")), retry.MOVE_ON,
                 id="10000-on-400"),
    pytest.param(mapped(401, None), retry.MOVE_ON, id="401-no-body"),
    pytest.param(mapped(403, None), retry.MOVE_ON, id="403-no-body"),
    # Transient: another attempt can succeed.
    pytest.param(mapped(429, load_data("cf_error_3040.json")), retry.RETRY, id="3040-on-429"),
    pytest.param(mapped(400, load_data("cf_error_3040.json")), retry.RETRY, id="3040-on-400"),
    pytest.param(mapped(400, load_data("cf_error_3040_internal.json")), retry.RETRY,
                 id="3040-internalCode"),
    pytest.param(mapped(500, cf_error(3040, "Capacity temporarily exceeded")), retry.RETRY,
                 id="3040-on-500"),
    pytest.param(mapped(500, cf_error(3043, "Internal server error")), retry.RETRY, id="500"),
    pytest.param(mapped(502, None), retry.RETRY, id="502-no-body"),
    pytest.param(mapped(503, None), retry.RETRY, id="503-no-body"),
    pytest.param(mapped(504, None), retry.RETRY, id="504-no-body"),
    pytest.param(mapped(408, None), retry.RETRY, id="408"),
    pytest.param(mapped(400, cf_error(3007, "Request timeout")), retry.RETRY, id="3007"),
    pytest.param(UpstreamError("Could not reach Workers AI.", code="upstream_unreachable"),
                 retry.RETRY, id="connection-error"),
    pytest.param(UpstreamTimeoutError("Could not connect in time.", code="connect_timeout"),
                 retry.RETRY, id="connect-timeout"),
    # The answer stands.
    pytest.param(mapped(400, load_data("cf_error_5006.json")), retry.GIVE_UP, id="5006"),
    pytest.param(mapped(400, load_data("cf_error_5007.json")), retry.GIVE_UP, id="5007-on-400"),
    pytest.param(mapped(404, load_data("cf_error_5007.json")), retry.GIVE_UP, id="5007-on-404"),
    pytest.param(mapped(404, load_data("cf_error_7000.json")), retry.GIVE_UP, id="7000"),
    pytest.param(mapped(422, cf_error(3010, "Invalid or incomplete input")), retry.GIVE_UP,
                 id="other-4xx"),
    pytest.param(mapped(413, cf_error(3006, "Request is too large")), retry.GIVE_UP, id="3006"),
]


@pytest.mark.parametrize("error, expected", VERDICTS)
def test_verdict_classifies_error(error, expected):
    assert retry.verdict(error) == expected


def test_verdict_never_retries_quota_used_up():
    error = mapped(429, load_data("cf_error_3036.json"))
    assert retry.verdict(error) != retry.RETRY


# ---------------------------------------------------------------- backoff schedule


def no_retry_after():
    return RateLimitError("Workers AI is out of capacity.")


@pytest.mark.parametrize("attempt, full", [
    pytest.param(1, 0.25, id="first"),
    pytest.param(2, 0.5, id="second"),
    pytest.param(3, 1.0, id="third"),
    pytest.param(4, 2.0, id="fourth"),
    pytest.param(5, 4.0, id="fifth-at-ceiling"),
    pytest.param(9, 4.0, id="capped-at-ceiling"),
])
def test_backoff_grows_exponentially_up_to_ceiling(attempt, full):
    top = retry.backoff(attempt, no_retry_after(), rand=lambda: 1.0)
    bottom = retry.backoff(attempt, no_retry_after(), rand=lambda: 0.0)
    assert top == pytest.approx(full)
    assert bottom == pytest.approx(full / 2)


def test_backoff_never_shrinks_from_one_attempt_to_the_next():
    pauses = [retry.backoff(n, no_retry_after(), rand=lambda: 0.5) for n in range(1, 10)]
    assert pauses == sorted(pauses)
    assert pauses[1] > pauses[0]


@pytest.mark.parametrize("rand", [0.0, 0.1, 0.5, 0.9, 0.999999])
@pytest.mark.parametrize("attempt", [1, 2, 3, 6])
def test_backoff_jitter_stays_within_half_to_full_delay(attempt, rand):
    full = min(4.0, 0.25 * 2 ** (attempt - 1))
    pause = retry.backoff(attempt, no_retry_after(), rand=lambda: rand)
    assert full / 2 <= pause <= full
    assert pause == pytest.approx(full / 2 + rand * full / 2)


def test_backoff_jitter_varies_with_default_random():
    pauses = {retry.backoff(3, no_retry_after()) for _ in range(50)}
    assert len(pauses) > 1
    assert all(0.5 <= p <= 1.0 for p in pauses)


def test_backoff_honours_custom_base_and_ceiling():
    assert retry.backoff(1, no_retry_after(), base=1.0, ceiling=3.0, rand=lambda: 1.0) == 1.0
    assert retry.backoff(4, no_retry_after(), base=1.0, ceiling=3.0, rand=lambda: 1.0) == 3.0


# ---------------------------------------------------------------- Retry-After


def with_retry_after(value):
    return RateLimitError("Workers AI is out of capacity.", headers={"Retry-After": value})


@pytest.mark.parametrize("value, cap, expected", [
    pytest.param("3", 10.0, 3.0, id="seconds"),
    pytest.param("0.5", 10.0, 0.5, id="fraction"),
    pytest.param("0", 10.0, 0.0, id="zero"),
    pytest.param("10", 10.0, 10.0, id="at-cap"),
    pytest.param("30", 10.0, 10.0, id="above-cap"),
    pytest.param("3600", 2.5, 2.5, id="custom-cap"),
    pytest.param(" 4 ", 10.0, 4.0, id="padded"),
    pytest.param("-5", 10.0, 0.0, id="negative"),
])
def test_backoff_honours_retry_after_up_to_cap(value, cap, expected):
    pause = retry.backoff(1, with_retry_after(value), retry_after_cap=cap, rand=lambda: 0.0)
    assert pause == pytest.approx(expected)


@pytest.mark.parametrize("attempt", [1, 3])
def test_backoff_retry_after_overrides_schedule_whatever_the_attempt(attempt):
    assert retry.backoff(attempt, with_retry_after("7"), rand=lambda: 0.0) == 7.0


@pytest.mark.parametrize("value", [
    pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", id="http-date"),
    pytest.param("Fri, 31 Dec 2999 23:59:59 GMT", id="far-future-http-date"),
    pytest.param("soon", id="garbage"),
    pytest.param("", id="empty"),
])
def test_backoff_ignores_retry_after_that_is_not_seconds(value):
    pause = retry.backoff(2, with_retry_after(value), rand=lambda: 0.0)
    assert pause == pytest.approx(0.25)  # the schedule's own pause for attempt 2, no jitter


@pytest.mark.parametrize("value", [
    pytest.param("nan", id="nan"),
    pytest.param("inf", id="inf"),
    pytest.param("1e400", id="overflow"),
    pytest.param("-inf", id="minus-inf"),
])
def test_backoff_is_finite_and_capped_whatever_retry_after(value):
    pause = retry.backoff(1, with_retry_after(value), retry_after_cap=10.0, rand=lambda: 0.0)
    assert math.isfinite(pause)
    assert 0.0 <= pause <= 10.0
