"""The model catalogue behind `/v1/models`, cached per worker.

Cloudflare's `ai/models/search` is slow next to a chat call and rarely changes, so
each worker keeps the list for `MODELS_CACHE_TTL` seconds. Concurrent requests on a
cold cache wait for one refresh instead of each calling Cloudflare (the lock is a
gevent lock once the worker is monkey-patched), and a failed refresh keeps serving
the previous list.
"""
import logging
import threading
import time
from datetime import datetime, UTC

from gateway.errors import APIError, NotFoundError

log = logging.getLogger(__name__)

TASK = "Text Generation"
RETRY_AFTER_FAILURE = 5.0  # seconds before a failed refresh is tried again


def _property(record, name):
    for prop in record.get("properties") or []:
        if isinstance(prop, dict) and prop.get("property_id") == name:
            return prop.get("value")
    return None


def _is_text_generation(record):
    """The search asks for this task; a record that says otherwise is left out anyway."""
    task = record.get("task")
    return not isinstance(task, dict) or task.get("name", TASK) == TASK


def _created(record):
    """Unix seconds from Cloudflare's `created_at` ("YYYY-MM-DD HH:MM:SS.mmm", UTC)."""
    try:
        moment = datetime.fromisoformat(str(record["created_at"]))
    except (KeyError, ValueError):
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _context_window(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def model_entry(name, record=None):
    """One `/v1/models` entry; `record` is the catalogue record when Cloudflare has one."""
    record = record or {}
    task = record.get("task")
    return {
        "id": name,
        "object": "model",
        "created": _created(record),
        "owned_by": "cloudflare",
        "permission": [],
        "root": name,
        "parent": None,
        "metadata": {
            "description": record.get("description"),
            "task": task.get("name") if isinstance(task, dict) else None,
            "context_window": _context_window(_property(record, "context_window")),
        },
    }


class ModelCatalogue:
    """Text Generation models, filtered by the `MODELS` allow-list when one is set."""

    def __init__(self, upstream, ttl, allow_list, clock=time.monotonic):
        self.upstream = upstream
        self.ttl = ttl
        self.allow_list = list(allow_list)
        self.clock = clock
        self._lock = threading.Lock()
        self._records = None  # name -> catalogue record
        self._next_refresh = 0.0
        self._last_error = None

    def _refresh(self):
        """Fetch the catalogue once, whoever else is waiting for it."""
        with self._lock:
            if self.clock() < self._next_refresh:
                return  # refreshed (or failed) by another request while we waited
            try:
                records = self.upstream.search_models()
            except APIError as exc:
                self._last_error = exc
                self._next_refresh = self.clock() + min(self.ttl, RETRY_AFTER_FAILURE)
                if self._records is not None:
                    log.warning("model catalogue refresh failed; serving the cached list")
                return
            self._records = {r["name"]: r for r in records
                             if isinstance(r.get("name"), str) and _is_text_generation(r)}
            self._next_refresh = self.clock() + self.ttl

    def records(self):
        """name -> record, refreshed when older than the TTL; the stale list if a refresh fails.

        Only a cold cache makes callers wait: while one request refreshes an expired list,
        the others get the stale one at once.
        """
        if self.clock() >= self._next_refresh:
            if self._records is None:
                self._refresh()
            elif self._lock.acquire(blocking=False):
                self._lock.release()
                self._refresh()
        if self._records is None:
            raise self._last_error.with_traceback(None)
        return self._records

    def record(self, name):
        """The catalogue record of one model, or None (unknown, or the catalogue unreachable)."""
        try:
            return self.records().get(name)
        except APIError:
            return None

    def entries(self):
        """The `/v1/models` entries, in catalogue order or allow-list order."""
        records = self.records()
        if self.allow_list:
            return [model_entry(name, records.get(name)) for name in self.allow_list]
        return [model_entry(name, record) for name, record in records.items()]

    def entry(self, model_id):
        """One entry, or NotFoundError."""
        for entry in self.entries():
            if entry["id"] == model_id:
                return entry
        raise model_not_found(model_id)

    def check_allowed(self, model):
        """Refuse a model outside the allow-list (or, without one, outside the catalogue).

        Returns whether the name was confirmed; False when the catalogue is unreachable
        and Workers AI itself is left to judge the name.
        """
        if self.allow_list:
            if model not in self.allow_list:
                raise model_not_found(model)
            return True
        try:
            records = self.records()
        except APIError:
            return False
        if model not in records:
            raise model_not_found(model)
        return True


def model_not_found(model):
    """OpenAI's wording for an unknown model."""
    return NotFoundError(f"The model '{model}' does not exist or you do not have access to it.",
                         param="model")
