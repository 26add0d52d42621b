"""The embedded state store: one SQLite file in WAL mode, exact across the workers of a host.

Each worker opens its own connection. Every decision that reads and then writes runs in
one `BEGIN IMMEDIATE` transaction, which takes the database's write lock first, so two
workers can never both see the last free slot. WAL lets readers carry on meanwhile, and
`synchronous=NORMAL` makes a commit a write to the log without an fsync: a power cut can
lose the last counters, never corrupt the file. A transaction never yields to another
greenlet (sqlite3 does no gevent I/O), and a lock keeps threads apart outside gevent.
"""
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import orjson

from gateway.state.store import (WINDOW, StateConfigError, Store, Window, decide, guarded)

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (id TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL)
    WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS documents_expiry ON documents (expires);
CREATE TABLE IF NOT EXISTS keys (hash TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
    record BLOB NOT NULL, last_used REAL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS windows (key TEXT, second INTEGER, requests INTEGER NOT NULL,
    tokens INTEGER NOT NULL, PRIMARY KEY (key, second)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS open_requests (key TEXT, ticket TEXT, expires REAL NOT NULL,
    PRIMARY KEY (key, ticket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS daily (key TEXT, date TEXT, tokens INTEGER NOT NULL,
    PRIMARY KEY (key, date)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage (name TEXT, date TEXT, model TEXT, requests INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    PRIMARY KEY (name, date, model)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS accounts (account TEXT PRIMARY KEY, until REAL NOT NULL,
    reason TEXT NOT NULL) WITHOUT ROWID;
"""


class SQLiteStore(Store):
    """The store in one SQLite file; see the module docstring."""

    failures = (sqlite3.Error, OSError)

    def __init__(self, path, url="", clock=time.time, busy_timeout=5.0):
        super().__init__()
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.RLock()
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StateConfigError(
                f"STATE_URL={url or path}: cannot open the SQLite state store at {path} "
                f"({type(exc).__name__}: {exc}). Point STATE_URL at a writable file, "
                f"e.g. sqlite:////var/lib/cf-ai-endpoint/gateway.db.") from None

    @contextmanager
    def _write(self):
        """One transaction holding the write lock from its first statement."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql, args=()):
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    @guarded
    def ping(self):
        self._read("SELECT 1")

    # -- documents ---------------------------------------------------------------------------

    @guarded
    def put_json(self, key, value, ttl=None):
        now = self.clock()
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO documents VALUES (?, ?, ?)",
                       (key, orjson.dumps(value), None if ttl is None else now + ttl))
            db.execute("DELETE FROM documents WHERE expires <= ?", (now,))  # indexed: cheap

    @guarded
    def get_json(self, key):
        rows = self._read("SELECT value FROM documents WHERE id = ? AND "
                          "(expires IS NULL OR expires > ?)", (key, self.clock()))
        return orjson.loads(rows[0][0]) if rows else None

    @guarded
    def delete(self, key):
        with self._write() as db:
            gone = db.execute("DELETE FROM documents WHERE id = ? AND "
                              "(expires IS NULL OR expires > ?)", (key, self.clock())).rowcount
        return gone > 0

    # -- keys --------------------------------------------------------------------------------

    @guarded
    def add_key(self, record):
        try:
            with self._write() as db:
                db.execute("INSERT INTO keys (hash, name, record) VALUES (?, ?, ?)",
                           (record["hash"], record["name"], orjson.dumps(record)))
        except sqlite3.IntegrityError:
            return False
        return True

    @guarded
    def find_key(self, key_hash):
        rows = self._read("SELECT record FROM keys WHERE hash = ?", (key_hash,))
        return orjson.loads(rows[0][0]) if rows else None

    @guarded
    def list_keys(self):
        rows = self._read("SELECT record, last_used FROM keys ORDER BY name")
        return [{**orjson.loads(record), "last_used_at": _whole(used)} for record, used in rows]

    @guarded
    def remove_key(self, name):
        with self._write() as db:
            row = db.execute("SELECT hash, record, last_used FROM keys WHERE name = ?",
                             (name,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM keys WHERE hash = ?", (row[0],))
        return {**orjson.loads(row[1]), "last_used_at": _whole(row[2])}

    # -- limits ------------------------------------------------------------------------------

    @guarded
    def admit(self, ticket):
        key, second = ticket.key_hash, ticket.second
        with self._write() as db:
            if db.execute("SELECT 1 FROM keys WHERE hash = ?", (key,)).fetchone() is None:
                return Window("revoked")
            db.execute("DELETE FROM windows WHERE key = ? AND second <= ?", (key, second - WINDOW))
            buckets = db.execute("SELECT second, requests, tokens FROM windows WHERE key = ? "
                                 "ORDER BY second", (key,)).fetchall()
            db.execute("DELETE FROM open_requests WHERE key = ? AND expires <= ?",
                       (key, ticket.now))
            open_requests = db.execute("SELECT COUNT(*) FROM open_requests WHERE key = ?",
                                       (key,)).fetchone()[0]
            row = db.execute("SELECT tokens FROM daily WHERE key = ? AND date = ?",
                             (key, ticket.date)).fetchone()
            window = Window(None, buckets, open_requests, row[0] if row else 0)
            window.refused = decide(ticket.limits, ticket.estimate, window.requests,
                                    window.tokens, open_requests, window.daily_tokens)
            if window.refused is None:
                db.execute("INSERT INTO windows VALUES (?, ?, 1, ?) ON CONFLICT (key, second) DO "
                           "UPDATE SET requests = requests + 1, tokens = tokens + excluded.tokens",
                           (key, second, ticket.estimate))
                if ticket.limits.max_parallel is not None:
                    db.execute("INSERT OR REPLACE INTO open_requests VALUES (?, ?, ?)",
                               (key, ticket.id, ticket.now + ticket.hold))
        return window

    @guarded
    def settle(self, ticket, prompt_tokens, completion_tokens, model):
        key, total = ticket.key_hash, prompt_tokens + completion_tokens
        with self._write() as db:
            db.execute("UPDATE windows SET tokens = tokens + ? WHERE key = ? AND second = ?",
                       (total - ticket.estimate, key, ticket.second))
            db.execute("DELETE FROM open_requests WHERE key = ? AND ticket = ?", (key, ticket.id))
            db.execute("INSERT INTO daily VALUES (?, ?, ?) ON CONFLICT (key, date) DO UPDATE "
                       "SET tokens = tokens + excluded.tokens", (key, ticket.date, total))
            db.execute("INSERT INTO usage VALUES (?, ?, ?, 1, ?, ?) "
                       "ON CONFLICT (name, date, model) DO UPDATE SET requests = requests + 1, "
                       "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
                       "completion_tokens = completion_tokens + excluded.completion_tokens",
                       (ticket.name, ticket.date, model, prompt_tokens, completion_tokens))
            db.execute("UPDATE keys SET last_used = ? WHERE hash = ?", (self.clock(), key))

    @guarded
    def usage(self, since, name=None):
        sql = ("SELECT name, date, model, requests, prompt_tokens, completion_tokens FROM usage "
               "WHERE date >= ?" + (" AND name = ?" if name is not None else "")
               + " ORDER BY date, name, model")
        rows = self._read(sql, (since,) if name is None else (since, name))
        fields = ("name", "date", "model", "requests", "prompt_tokens", "completion_tokens")
        return [dict(zip(fields, row, strict=True)) for row in rows]

    # -- accounts ----------------------------------------------------------------------------

    @guarded
    def mark_account(self, account_id, until, reason):
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO accounts VALUES (?, ?, ?)",
                       (account_id, until, reason))

    @guarded
    def accounts_out(self, now):
        rows = self._read("SELECT account, until, reason FROM accounts WHERE until > ?", (now,))
        return {account: (until, reason) for account, until, reason in rows}

    def close(self):
        with self._lock:
            self._db.close()


def _whole(seconds):
    return None if seconds is None else int(seconds)
