"""Client keys people can be given: made once, stored as their SHA-256, each with its limits.

A new key is `sk-cf-` and 43 random URL-safe characters (256 bits from `secrets`), shown
once; the store keeps only its SHA-256 (a fast hash is right for a random 256-bit secret:
there is nothing to guess) and the record: name, model patterns, limits, expiry.

`Principal` is whoever a request authenticated as: a stored key, or one of API_KEYS
(unlimited, every model, exactly as before). `KeyRing` finds the record of a presented
key and remembers it for the worker: a record never changes once made, so only its
existence needs the store again (each admission checks it), and when the store is down a
key verified in the last 60 s is still accepted. It also remembers, by hash, the keys the
store did not know, for UNKNOWN_FOR seconds (at most UNKNOWN_MAX of them), so a client
repeating a wrong or revoked key costs the store one lookup per worker every few seconds,
not one per request. The price: a key presented before it existed would be refused for up
to UNKNOWN_FOR seconds after it is made, which a new key, random and never seen, is not.
A presented `sk-cf-` key not shaped as `new_secret` makes them is refused without a lookup.
"""
import fnmatch
import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass

from gateway.state.store import Limits

PREFIX = "sk-cf-"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TRUST_FOR = 60.0  # seconds a verified key is still accepted while the store is down
UNKNOWN_FOR = 5.0  # seconds a key the store did not know is refused without asking it again
UNKNOWN_MAX = 1024  # unknown keys (hashes) a worker remembers; the oldest are dropped first
SHAPE = re.compile(PREFIX + r"[A-Za-z0-9_-]{43}")  # what new_secret makes
DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
LIMIT_FIELDS = ("rpm", "tpm", "max_parallel", "daily_tokens")
ENV_KEYS_NAME = "(api_keys)"  # the metrics label of API_KEYS keys: no stored name has brackets


def new_secret():
    """A fresh client key."""
    return PREFIX + secrets.token_urlsafe(32)


def well_formed(secret):
    """Whether `secret` could be a key this gateway made (checked before any store lookup)."""
    return SHAPE.fullmatch(secret) is not None


def digest(secret):
    """The SHA-256 under which a key is stored and looked up."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_duration(text):
    """Seconds of "3600", "45s", "15m", "12h", "30d" or "2w"; ValueError otherwise."""
    match = DURATION.match(str(text))
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration such as 3600, 12h or 30d")
    return int(match.group(1)) * UNITS[match.group(2)]


def new_record(fields, now=None):
    """(secret, record) for a validated key request (see schemas.KeyRequestSchema)."""
    now = int(time.time() if now is None else now)
    secret = new_secret()
    expires_in = fields.get("expires_in")
    record = {"hash": digest(secret), "name": fields["name"],
              "models": list(fields.get("models") or []),
              **{name: fields.get(name) for name in LIMIT_FIELDS},
              "created_at": now, "expires_at": now + expires_in if expires_in else None}
    return secret, record


class NameTaken(Exception):
    """Another key already has this name."""


def create_key(store, fields, now=None):
    """Make and store a key from validated fields: (secret, record). NameTaken when taken."""
    secret, record = new_record(fields, now)
    if not store.add_key(record):
        raise NameTaken(record["name"])
    return secret, record


def public(record):
    """A record as clients of the admin API and CLI see it: no hash, nothing secret."""
    return {"object": "key", "name": record["name"], "models": record.get("models") or [],
            **{name: record.get(name) for name in LIMIT_FIELDS},
            "created_at": record.get("created_at"), "expires_at": record.get("expires_at"),
            "last_used_at": record.get("last_used_at")}


@dataclass(frozen=True)
class Principal:
    """Who a request authenticated as."""

    label: str  # short hash of the secret, for logs
    name: str | None = None  # the stored key's name; None for API_KEYS keys
    key_hash: str | None = None
    models: tuple = ()  # patterns; empty: every model
    limits: Limits = Limits()
    expires_at: float | None = None

    @property
    def stored(self):
        return self.key_hash is not None

    @property
    def id(self):
        """A stable owner id for things a key creates (e.g. stored responses)."""
        return f"key:{self.key_hash[:32]}" if self.stored else f"env:{self.label}"

    @property
    def metrics_name(self):
        return self.name if self.stored else ENV_KEYS_NAME

    def allows(self, *models):
        """Whether any of the names (a model, or an alias and its model) fits a pattern."""
        if not self.models:
            return True
        return any(fnmatch.fnmatchcase(model, pattern)
                   for model in models if model for pattern in self.models)

    def expired(self, now=None):
        return self.expires_at is not None and (time.time() if now is None else now) >= \
            self.expires_at


def principal_of(record, label):
    return Principal(label=label, name=record["name"], key_hash=record["hash"],
                     models=tuple(record.get("models") or ()),
                     limits=Limits(**{name: record.get(name) for name in LIMIT_FIELDS}),
                     expires_at=record.get("expires_at"))


class KeyRing:
    """The worker's memory of stored keys it has verified (by hash)."""

    def __init__(self, store, clock=time.monotonic):
        self.store = store
        self.clock = clock
        self._known = {}  # hash -> (Principal, verified at)
        self._unknown = {}  # hash -> when the store last did not know it, oldest first
        self._lock = threading.Lock()

    def find(self, key_hash, label, fresh=False):
        """The Principal of a stored key, or None when the store does not know it.

        Without `fresh` a remembered record is used as it is (the caller checks the key
        still exists, e.g. by admitting a request). Raises StoreUnavailable when the store
        is down and the key was not verified in the last TRUST_FOR seconds.
        """
        from gateway.state.store import StoreUnavailable
        known = self._known.get(key_hash)
        if known is not None and not fresh:
            return known[0]
        if known is None and self._recently_unknown(key_hash):
            return None
        try:
            record = self.store.find_key(key_hash)
        except StoreUnavailable:
            if known is not None and self.clock() - known[1] < TRUST_FOR:
                return known[0]
            raise
        if record is None:
            self.forget(key_hash)
            self._note_unknown(key_hash)
            return None
        principal = principal_of(record, label)
        with self._lock:
            self._known[key_hash] = (principal, self.clock())
            self._unknown.pop(key_hash, None)
        return principal

    def _recently_unknown(self, key_hash):
        noted = self._unknown.get(key_hash)
        if noted is None:
            return False
        if self.clock() - noted < UNKNOWN_FOR:
            return True
        with self._lock:
            self._unknown.pop(key_hash, None)
        return False

    def _note_unknown(self, key_hash):
        with self._lock:
            self._unknown.pop(key_hash, None)  # re-noted: now the newest
            self._unknown[key_hash] = self.clock()
            while len(self._unknown) > UNKNOWN_MAX:
                del self._unknown[next(iter(self._unknown))]

    def confirm(self, principal):
        """The store just vouched for this key (an admission found it)."""
        with self._lock:
            self._known[principal.key_hash] = (principal, self.clock())

    def trusted(self, principal):
        """Whether a key may be served without the store (verified in the last TRUST_FOR s)."""
        known = self._known.get(principal.key_hash)
        return known is not None and self.clock() - known[1] < TRUST_FOR

    def forget(self, key_hash):
        with self._lock:
            self._known.pop(key_hash, None)
