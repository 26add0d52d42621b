"""Each model's own input and output JSON schema (`ai/models/schema`), cached per worker.

What a model accepts (tools and in which form, JSON mode, `stop`, images, reasoning
effort) is written in its schema, so the gateway reads it from Cloudflare instead of
keeping a table of model names, and a model released tomorrow works the same way.
Like the catalogue, each schema is kept `MODELS_CACHE_TTL` seconds: a cold entry costs
one upstream call however many requests wait for it, an expired one is refreshed by
one request while the others get the stale copy, and a failed refresh keeps serving
the stale copy (or, with none, "unknown" for a few seconds before trying again).
https://developers.cloudflare.com/api/resources/ai/subresources/models/subresources/schema/
"""
import logging
import threading
import time
from dataclasses import dataclass

from gateway.cloudflare.capabilities import Capabilities, derive
from gateway.errors import APIError

log = logging.getLogger(__name__)

RETRY_AFTER_FAILURE = 5.0  # seconds before a failed fetch is tried again
MAX_ENTRIES = 2000  # names are checked against the catalogue first; this only bounds memory


@dataclass
class _Entry:
    schema: dict | None
    next_refresh: float


class ModelSchemas:
    """`get(model)` -> `{"input": ..., "output": ...}` or None; `capabilities(model)`."""

    def __init__(self, upstream, ttl, catalogue=None, clock=time.monotonic):
        self.upstream = upstream
        self.ttl = ttl
        self.catalogue = catalogue
        self.clock = clock
        self._entries = {}
        self._locks = {}
        self._guard = threading.Lock()

    def get(self, model):
        """The model's schema, or None when Cloudflare could not tell (and nothing is cached)."""
        entry = self._entries.get(model)
        if entry is not None and self.clock() < entry.next_refresh:
            return entry.schema
        lock = self._lock_for(model)
        if entry is not None and entry.schema is not None:
            if not lock.acquire(blocking=False):
                return entry.schema  # another request is refreshing it: serve the stale copy
            lock.release()
        self._refresh(model, lock)
        return self._entries[model].schema

    def capabilities(self, model):
        """What the model can do, from its schema and its catalogue properties."""
        record = self.catalogue.record(model) if self.catalogue is not None else None
        return derive(self.get(model), record)

    def _lock_for(self, model):
        with self._guard:
            lock = self._locks.get(model)
            if lock is None:
                if len(self._locks) >= MAX_ENTRIES:
                    self._forget_oldest()
                lock = self._locks[model] = threading.Lock()
            return lock

    def _forget_oldest(self):
        oldest = next(iter(self._locks))
        self._locks.pop(oldest, None)
        self._entries.pop(oldest, None)

    def _refresh(self, model, lock):
        with lock:
            entry = self._entries.get(model)
            if entry is not None and self.clock() < entry.next_refresh:
                return  # fetched (or failed) by another request while we waited
            try:
                schema = self.upstream.model_schema(model)
            except APIError as error:
                stale = entry.schema if entry is not None else None
                log.warning("model schema of %s unavailable (%s)%s", model, error.code,
                            "; serving the cached one" if stale is not None else "")
                self._entries[model] = _Entry(stale, self.clock() + min(self.ttl,
                                                                         RETRY_AFTER_FAILURE))
                return
            self._entries[model] = _Entry(schema, self.clock() + self.ttl)


__all__ = ["Capabilities", "ModelSchemas"]
