"""The state store interface: everything the gateway shares between workers and hosts.

One small interface, two implementations (`sqlite_store`, `redis_store`); nothing else in
the gateway knows which one it talks to. What it holds:

- small JSON documents with a time to live, by id (`put_json`, `get_json`, `delete`);
- client keys by the SHA-256 of their secret (`add_key`, `find_key`, `list_keys`,
  `remove_key`), never the secret itself;
- per-key limits: `admit` decides and books one request atomically on the store (one
  transaction on SQLite, one Lua script on Redis: never read-modify-write in Python), and
  `settle` charges what the request really cost when it ends;
- usage per key name, day and model (`usage`);
- the Cloudflare account pool's shared view (`mark_account`, `accounts_out`).

A store that cannot be reached raises `StoreUnavailable` from every call, fast: after one
failure the store is not tried again for `retry_after` seconds, so an outage costs each
request nothing. Callers catch it and degrade (gateway.state.guard); a store that cannot
even be opened at start-up raises `StateConfigError` naming STATE_URL.
"""
import functools
import logging
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

WINDOW = 60  # seconds of the rpm/tpm window, kept in one-second buckets
WARN_EVERY = 60.0  # seconds between two "store unreachable" warnings of one process
USAGE_DAYS = 400  # days of per-key usage kept


class StoreUnavailable(Exception):
    """The store did not answer (down, unreachable, locked); the gateway degrades."""


class StateConfigError(RuntimeError):
    """STATE_URL names a store that cannot be used at all (bad URL, unwritable path)."""


@dataclass(frozen=True)
class Limits:
    """A key's limits; None means unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    daily_tokens: int | None = None

    @property
    def any(self):
        return any(v is not None for v in (self.rpm, self.tpm, self.max_parallel,
                                          self.daily_tokens))


@dataclass
class Ticket:
    """One request of a stored key, from admission to settlement."""

    key_hash: str
    name: str
    limits: Limits
    estimate: int  # tokens booked in the window at admission (input chars / 4 + max_tokens)
    now: float  # unix seconds at admission
    id: str  # unique per request: its slot among the key's open requests
    hold: float = 900.0  # seconds an open-request slot lives if the request never settles

    @property
    def second(self):
        return int(self.now)

    @property
    def date(self):
        return time.strftime("%Y-%m-%d", time.gmtime(self.now))


@dataclass
class Window:
    """What `admit` saw (before booking this request) and what it decided."""

    refused: str | None  # None (admitted), "revoked", "quota", "parallel", "requests", "tokens"
    buckets: list = field(default_factory=list)  # [(second, requests, tokens)] in the window
    open_requests: int = 0
    daily_tokens: int = 0

    @property
    def requests(self):
        return sum(b[1] for b in self.buckets)

    @property
    def tokens(self):
        return sum(b[2] for b in self.buckets)


def decide(limits, estimate, requests, tokens, open_requests, daily_tokens):
    """Which limit refuses the request, or None. The Redis Lua script mirrors this exactly.

    A request is booked in the window with its estimate, so a burst is held back by the
    tokens it may use; an estimate above the whole `tpm` counts as `tpm`, so one large
    request still passes when the window is empty.
    """
    if limits.daily_tokens is not None and daily_tokens >= limits.daily_tokens:
        return "quota"
    if limits.max_parallel is not None and open_requests >= limits.max_parallel:
        return "parallel"
    if limits.rpm is not None and requests >= limits.rpm:
        return "requests"
    if limits.tpm is not None and tokens + min(estimate, limits.tpm) > limits.tpm:
        return "tokens"
    return None


def since(days, now=None):
    """The first UTC date ("YYYY-MM-DD") of the last `days` days, today included."""
    return time.strftime("%Y-%m-%d", time.gmtime((time.time() if now is None else now)
                                                 - (days - 1) * 86400))


def guarded(method):
    """Turn a backend failure into StoreUnavailable and skip the store while it is down."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if time.monotonic() < self._down_until:
            raise StoreUnavailable(self._last_failure)
        try:
            result = method(self, *args, **kwargs)
        except self.failures as exc:
            self._failed(exc)
            raise StoreUnavailable(self._last_failure) from None
        if self._last_failure is not None:
            self._recovered()
        return result
    return call


class Store:
    """Base of both stores: the failure bookkeeping; subclasses implement the operations."""

    failures = (OSError,)  # backend exceptions that mean "unreachable"; subclasses extend it
    retry_after = 1.0  # seconds the store is skipped after a failure

    def __init__(self):
        self._down_until = 0.0
        self._last_failure = None
        self._last_warning = -WARN_EVERY
        self._health_lock = threading.Lock()

    @property
    def available(self):
        """Whether the last call reached the store."""
        return self._last_failure is None

    def _failed(self, exc):
        from gateway.ops import metrics
        with self._health_lock:
            self._last_failure = f"{type(exc).__name__}: {exc}"
            self._down_until = time.monotonic() + self.retry_after
            warn = time.monotonic() - self._last_warning >= WARN_EVERY
            if warn:
                self._last_warning = time.monotonic()
        metrics.state_store_failed()
        if warn:
            log.warning("state store unreachable (%s): serving without it: keys verified in the "
                        "last 60 s and API_KEYS are accepted, rate limits are not enforced",
                        self._last_failure)

    def _recovered(self):
        from gateway.ops import metrics
        with self._health_lock:
            was = self._last_failure
            self._last_failure = None
        if was is not None:
            metrics.state_store_recovered()
            log.warning("state store reachable again; rate limits enforced")

    def close(self):
        """Release connections (tests and the CLI)."""

    # The interface. Every method may raise StoreUnavailable.

    def ping(self):
        """Reach the store once (readiness checks)."""
        raise NotImplementedError

    def put_json(self, key, value, ttl=None):
        """Keep a JSON-serialisable `value` under `key` for `ttl` seconds (None: forever)."""
        raise NotImplementedError

    def get_json(self, key):
        """The value under `key`, or None when absent or expired."""
        raise NotImplementedError

    def delete(self, key):
        """Drop `key`; whether it was there."""
        raise NotImplementedError

    def add_key(self, record):
        """Store a key record (with its `hash` and `name`); False when the name is taken."""
        raise NotImplementedError

    def find_key(self, key_hash):
        """The record of the key with this SHA-256, or None."""
        raise NotImplementedError

    def list_keys(self):
        """Every key record, by name, each with its `last_used_at`."""
        raise NotImplementedError

    def remove_key(self, name):
        """Revoke the key called `name`: its record, or None when there is none."""
        raise NotImplementedError

    def admit(self, ticket):
        """Decide on and book one request atomically; the `Window` it saw."""
        raise NotImplementedError

    def settle(self, ticket, prompt_tokens, completion_tokens, model):
        """Charge a finished request: real tokens for its estimate, its slot freed, usage."""
        raise NotImplementedError

    def usage(self, since, name=None):
        """Usage rows from the date `since` ("YYYY-MM-DD") on, for one key name or all."""
        raise NotImplementedError

    def mark_account(self, account_id, until, reason):
        """Take a Cloudflare account out of every worker's rotation until `until` (unix s)."""
        raise NotImplementedError

    def accounts_out(self, now):
        """{account_id: (until, reason)} of the accounts still out at `now`."""
        raise NotImplementedError
