"""What to do after a failed upstream attempt: move on, retry after a pause, or give up.

Retries happen only while nothing has reached the client, and only for failures that
another attempt can fix: connection errors, 5xx, Cloudflare capacity (3040) and
Cloudflare timeouts (408/3007). The pause grows exponentially with full jitter, so
that many workers failing together do not retry in lockstep, and a `Retry-After`
from Cloudflare is honoured up to a cap.
"""
import math
import random

from gateway.cloudflare.error_map import OUT_OF_CAPACITY, QUOTA_USED_UP, TOKEN_REFUSED

MOVE_ON = "move_on"  # this account cannot serve: sideline it, try the next one at once
OTHER_ACCOUNT = "other_account"  # this account cannot serve this model: try the next one
RETRY = "retry"      # transient: try again (on the next account) after a pause
GIVE_UP = "give_up"  # the answer stands

# 403s about one model on one account (terms not agreed, private or paid-plan model): another
# account may serve it, and this one still serves other models.
MODEL_REFUSED_FOR_ACCOUNT = {5016, 5018, 3041, 5035}


def verdict(error):
    """Classify an APIError raised by an upstream attempt."""
    status, code = error.upstream_status, error.cf_code
    if code == QUOTA_USED_UP or code == TOKEN_REFUSED:
        return MOVE_ON
    if code in MODEL_REFUSED_FOR_ACCOUNT:
        return OTHER_ACCOUNT
    if status in (401, 403):
        return MOVE_ON
    if error.code in ("upstream_unreachable", "connect_timeout"):
        return RETRY
    if code == OUT_OF_CAPACITY or code == 3007 or status == 408:
        return RETRY
    if status is not None and status >= 500:
        return RETRY
    return GIVE_UP


def backoff(attempt, error, base=0.25, ceiling=4.0, retry_after_cap=10.0, rand=random.random):
    """Seconds to wait before retry number `attempt` (1-based)."""
    retry_after = error.headers.get("Retry-After") if error.headers else None
    if retry_after is not None:
        try:
            seconds = float(retry_after)
        except ValueError:
            seconds = None  # an HTTP date: fall back to our own schedule
        if seconds is not None and math.isfinite(seconds):
            return min(max(seconds, 0.0), retry_after_cap)
    delay = min(ceiling, base * 2 ** (attempt - 1))
    return delay / 2 + rand() * delay / 2
