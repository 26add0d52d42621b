"""Shared state: the store (SQLite file or Redis) behind one interface, keys and their limits.

`open_store(url)` picks the implementation from STATE_URL; the app factory keeps the store
in `app.extensions["state"]`, where every part of the gateway finds it (the account pool,
the key check and limits, the admin API and CLI, stored documents such as responses).
"""
from pathlib import Path
from urllib.parse import urlsplit

from gateway.state.store import StateConfigError, Store, StoreUnavailable

__all__ = ["open_store", "redacted", "StateConfigError", "Store", "StoreUnavailable"]


def redacted(url):
    """STATE_URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def sqlite_file(url):
    """The file named by `sqlite:///relative/path` or `sqlite:////absolute/path`."""
    path = url[len("sqlite:///"):]
    if not path:
        raise StateConfigError(f"STATE_URL={url}: name a file, e.g. sqlite:///state/gateway.db")
    return path if path == ":memory:" else str(Path(path))


def open_store(url, timeout=0.5):
    """The store STATE_URL names; StateConfigError (naming STATE_URL) when it cannot be used.

    A Redis server that is down at start-up is no error: the gateway serves degraded until
    it answers. An SQLite file that cannot be created is: nothing would ever fix it.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        from gateway.state.sqlite_store import SQLiteStore
        return SQLiteStore(sqlite_file(url), url=url)
    if scheme in ("redis", "rediss", "unix"):
        from gateway.state.redis_store import RedisStore
        return RedisStore(url, timeout=timeout)
    raise StateConfigError(f"STATE_URL={redacted(url)}: use sqlite:///path/to/state.db or "
                           "redis://host:port/db (rediss:// for TLS)")
