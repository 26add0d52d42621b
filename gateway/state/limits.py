"""Per-key limits the OpenAI way: the token estimate, the 429s and the x-ratelimit-* headers.

Pure functions over a `Window` (what the store saw when it admitted or refused a
request). The headers are those of OpenAI's API, which the OpenAI SDKs read to back off
by themselves: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, the resets as
durations such as `1s`, `6m0s` or `120ms`, and `Retry-After` in whole seconds on a 429.

How tokens count: a request is booked in the key's 60-second window with an estimate
(input characters / 4 plus its max_tokens, the default when it sends none) before it
runs, and the estimate is replaced by Cloudflare's usage (prompt + completion tokens)
when it ends, streams included; a stream the client left early is charged the tokens
streamed so far plus the estimated prompt.
"""
import math

from gateway.errors import QuotaExceededError, RateLimitError
from gateway.state.store import WINDOW

RATE_LIMIT_HEADERS = tuple(f"x-ratelimit-{what}-{unit}" for unit in ("requests", "tokens")
                           for what in ("limit", "remaining", "reset"))
MAX_TOKEN_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
TEXT_FIELDS = ("messages", "prompt", "input", "instructions", "system", "content", "text")
# The most tokens one request is booked for, whatever max_tokens it sends: no model answers
# more, and it keeps every sum the stores make of a window's bookings exact (SQLite's 64-bit
# INTEGER, Redis' HINCRBY, the Lua script's doubles); a client's max_tokens of 2^63 made
# SQLite raise and Redis' script fail, which took the store out for every key.
MAX_ESTIMATE = 2**31 - 1
WHAT = {"requests": "requests per minute (rpm)", "tokens": "tokens per minute (tpm)",
        "parallel": "requests open at once (max_parallel)"}


def _chars(value, depth=0):
    """Characters of the text in a request body (data: URLs such as images left out)."""
    if isinstance(value, str):
        return 0 if value.startswith("data:") else len(value)
    if depth > 8:
        return 0
    if isinstance(value, list):
        return sum(_chars(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return sum(_chars(item, depth + 1) for name, item in value.items()
                   if name in TEXT_FIELDS or name in ("parts", "text"))
    return 0


def estimate(body, default_max_tokens):
    """Tokens a request may use: input characters / 4 plus its max_tokens.

    `default_max_tokens` is what the route sends when the client gives no limit (0 for
    routes that produce no text, such as embeddings). At most MAX_ESTIMATE.
    """
    if not isinstance(body, dict):
        return min(default_max_tokens, MAX_ESTIMATE)
    chars = sum(_chars(body.get(name)) for name in TEXT_FIELDS if name in body)
    limit = next((body[f] for f in MAX_TOKEN_FIELDS
                  if isinstance(body.get(f), int) and not isinstance(body.get(f), bool)
                  and body[f] > 0), default_max_tokens)
    return min(math.ceil(chars / 4) + limit, MAX_ESTIMATE)


def duration(seconds):
    """A reset time as OpenAI writes it: `250ms`, `7s`, `1m30s`."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def _free_after(buckets, now, used, room, column):
    """Seconds until `used` minus what leaves the window fits in `room`."""
    for second, *counts in buckets:
        used -= counts[column]
        if used <= room:
            return max(0.0, second + WINDOW - now)
    return 0.0


def headers(limits, window, now, estimate=0, admitted=True):
    """OpenAI's x-ratelimit-* headers for a key's rpm and tpm (those it has)."""
    out = {}
    mine = (1, estimate) if admitted else (0, 0)  # this request, booked after `window`
    if limits.rpm is not None:
        used = window.requests + mine[0]
        out["x-ratelimit-limit-requests"] = str(limits.rpm)
        out["x-ratelimit-remaining-requests"] = str(max(0, limits.rpm - used))
        out["x-ratelimit-reset-requests"] = duration(_reset(window, now, mine[0], 0))
    if limits.tpm is not None:
        used = window.tokens + mine[1]
        out["x-ratelimit-limit-tokens"] = str(limits.tpm)
        out["x-ratelimit-remaining-tokens"] = str(max(0, limits.tpm - used))
        out["x-ratelimit-reset-tokens"] = duration(_reset(window, now, mine[1], 1))
    return out


def _reset(window, now, mine, column):
    """Seconds until the window holds none of what it holds now (OpenAI's "reset")."""
    if mine:
        return WINDOW
    seconds = [b[0] for b in window.buckets if b[column + 1]]
    return max(0.0, max(seconds) + WINDOW - now) if seconds else 0.0


def refusal(limits, window, now, estimate, name):
    """The 429 for a refused request (`window.refused` says which limit)."""
    reason = window.refused
    if reason == "quota":
        return QuotaExceededError(
            f"The key '{name}' has used its daily budget of {limits.daily_tokens} tokens; it "
            "renews at 00:00 UTC.", code="insufficient_quota")
    if reason == "requests":
        wait = _free_after(window.buckets, now, window.requests, limits.rpm - 1, 0)
    elif reason == "tokens":
        room = limits.tpm - min(estimate, limits.tpm)
        wait = _free_after(window.buckets, now, window.tokens, room, 1)
    else:
        wait = 1.0  # an open request may end any moment
    extra = headers(limits, window, now, admitted=False)
    extra["Retry-After"] = str(max(1, math.ceil(wait)))
    limit = {"requests": limits.rpm, "tokens": limits.tpm, "parallel": limits.max_parallel}
    error = RateLimitError(
        f"Rate limit reached for key '{name}' on {WHAT[reason]}: limit {limit[reason]}. "
        f"Please try again in {duration(wait if wait > 0 else 1.0)}.",
        code="rate_limit_exceeded", headers=extra)
    error.limit = reason
    if reason == "tokens":
        error.type = "tokens"
    return error
