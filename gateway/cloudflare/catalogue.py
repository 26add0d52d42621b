"""The model catalogue behind `/v1/models` and every route's model check, cached per worker.

Cloudflare's `ai/models/search` is slow next to a model call and rarely changes, so
each worker keeps the list for `MODELS_CACHE_TTL` seconds. Concurrent requests on a
cold cache wait for one refresh instead of each calling Cloudflare (the lock is a
gevent lock once the worker is monkey-patched), and a failed refresh keeps serving
the previous list. The catalogue holds the models of the tasks the gateway serves;
each record's `task` decides which route may use it, and `MODEL_ALIASES` adds other
names for them (`gateway.cloudflare.aliases`).
"""
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, UTC

from gateway.cloudflare.aliases import Aliases
from gateway.errors import APIError, InvalidRequestError, NotFoundError

log = logging.getLogger(__name__)

TEXT_GENERATION = "Text Generation"
TEXT_EMBEDDINGS = "Text Embeddings"
TEXT_TO_IMAGE = "Text-to-Image"
SPEECH_RECOGNITION = "Automatic Speech Recognition"
TEXT_TO_SPEECH = "Text-to-Speech"
SERVED_TASKS = (TEXT_GENERATION, TEXT_EMBEDDINGS, TEXT_TO_IMAGE, SPEECH_RECOGNITION,
                TEXT_TO_SPEECH)
RETRY_AFTER_FAILURE = 5.0  # seconds before a failed refresh is tried again


def record_property(record, name):
    """A catalogue record's `properties` value for `name`, else None."""
    for prop in (record or {}).get("properties") or []:
        if isinstance(prop, dict) and prop.get("property_id") == name:
            return prop.get("value")
    return None


def task_of(record):
    """The task name of a catalogue record, else None."""
    task = (record or {}).get("task")
    return task.get("name") if isinstance(task, dict) else None


def _created(record):
    """Unix seconds from Cloudflare's `created_at` ("YYYY-MM-DD HH:MM:SS.mmm", UTC)."""
    try:
        moment = datetime.fromisoformat(str(record["created_at"]))
    except (KeyError, ValueError):
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def int_or_none(value):
    """An integer from a catalogue value ("768", 768), else None."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def model_entry(name, record=None, alias_of=None):
    """One `/v1/models` entry; `record` is the catalogue record when Cloudflare has one."""
    record = record or {}
    entry = {
        "id": name,
        "object": "model",
        "created": _created(record),
        "owned_by": "cloudflare",
        "permission": [],
        "root": alias_of or name,
        "parent": None,
        "metadata": {
            "description": record.get("description"),
            "task": task_of(record),
            "context_window": int_or_none(record_property(record, "context_window")),
        },
    }
    if alias_of:
        entry["metadata"]["alias_of"] = alias_of
    return entry


@dataclass
class Resolved:
    """The model a request asked for: the client's name, Workers AI's name, its record."""

    requested: str
    name: str
    record: dict | None
    confirmed: bool  # allowed by the allow-list or found in the catalogue (a safe metrics label)


class ModelCatalogue:
    """The served models, filtered by the `MODELS` allow-list when one is set, plus aliases."""

    def __init__(self, upstream, ttl, allow_list, clock=time.monotonic, aliases=None):
        self.upstream = upstream
        self.ttl = ttl
        self.allow_list = list(allow_list)
        self.aliases = Aliases(aliases or {}, self.allow_list)
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
                records = self.upstream.search_models(task=None)
            except APIError as exc:
                self._last_error = exc
                self._next_refresh = self.clock() + min(self.ttl, RETRY_AFTER_FAILURE)
                if self._records is not None:
                    log.warning("model catalogue refresh failed; serving the cached list")
                return
            self._records = {r["name"]: r for r in records
                             if isinstance(r.get("name"), str) and task_of(r) in SERVED_TASKS}
            self._next_refresh = self.clock() + self.ttl
            if not self.allow_list:
                self.aliases.check_against(self._records)

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

    def cached_records(self):
        """The records when a list was ever loaded (refreshed when due), else None at once."""
        if self._records is None:
            return None
        try:
            return self.records()
        except APIError:
            return self._records

    def entries(self):
        """The `/v1/models` entries, in catalogue or allow-list order, then the aliases."""
        records = self.records()
        names = self.allow_list or list(records)
        entries = [model_entry(name, records.get(name)) for name in names]
        for alias, target in self.aliases.usable(records).items():
            entries.append(model_entry(alias, records.get(target), alias_of=target))
        return entries

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

    def resolve(self, requested, task, route, fetch=True):
        """The model behind `requested` (a name or an alias) for a route serving `task`.

        404 for a model (or an alias of one) that is not allowed; 400 naming `model` for
        a model of another task. A model whose record is unknown (catalogue down, or an
        allowed name Cloudflare does not list) is left to Workers AI to judge. Without
        `fetch`, an allowed model is checked against the catalogue only when it is
        already loaded (at a worker's start-up), so that chat never waits for it.
        """
        name = self.aliases.target(requested)
        try:
            confirmed = self.check_allowed(name)
        except NotFoundError:
            raise model_not_found(requested) from None
        try:
            records = self.records() if fetch else self.cached_records()
        except APIError:
            records = None
        record = (records or {}).get(name)
        actual = task_of(record)
        if actual is not None and actual != task:
            raise InvalidRequestError(
                f"The model '{requested}' is a {actual} model; {route} needs a {task} model.",
                param="model", code="model_not_supported")
        return Resolved(requested, name, record, confirmed)


def model_not_found(model):
    """OpenAI's wording for an unknown model."""
    return NotFoundError(f"The model '{model}' does not exist or you do not have access to it.",
                         param="model")
