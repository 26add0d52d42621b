"""Prometheus metrics, correct across gunicorn's worker processes.

With `PROMETHEUS_MULTIPROC_DIR` set (gunicorn.conf.py does it before forking),
prometheus_client keeps each worker's values in files and `/metrics` merges them,
whichever worker answers the scrape. Figures come from the same per-request stats
as the log line, so the two never disagree.
"""
import os

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess)

from gateway.cloudflare.error_map import code_label

REQUESTS = Counter("gateway_requests_total", "Requests answered", ["route", "status", "model"])
DURATION = Histogram("gateway_request_duration_seconds", "Whole request time (streams: to the end)",
                     ["route"],
                     buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300))
TTFT = Histogram("gateway_time_to_first_token_seconds", "Time to the first streamed token",
                 ["model"], buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
TOKENS = Counter("gateway_tokens_total", "Tokens reported by Cloudflare", ["direction", "model"])
UPSTREAM_ERRORS = Counter("gateway_upstream_errors_total", "Failed Workers AI answers",
                          ["cf_code", "upstream_status"])
OPEN_STREAMS = Gauge("gateway_open_streams", "Streams currently open",
                     multiprocess_mode="livesum")

KEY_REQUESTS = Counter("gateway_key_requests_total", "Requests answered, per client key name",
                       ["key_name", "status"])
KEY_TOKENS = Counter("gateway_key_tokens_total",
                     "Tokens reported by Cloudflare, per client key name",
                     ["key_name", "direction"])
RATE_LIMITED = Counter("gateway_rate_limited_total", "Requests refused by a key's limits",
                       ["key_name", "limit"])
STATE_STORE_UP = Gauge("gateway_state_store_up",
                       "1 while the state store answers; 0 while the gateway serves without it "
                       "(rate limits not enforced)", multiprocess_mode="livemin")
STATE_STORE_ERRORS = Counter("gateway_state_store_errors_total",
                             "Calls to the state store that failed")
DEGRADED = Counter("gateway_state_degraded_requests_total",
                   "Requests served without the state store (no rate limits)")

GENERATION_ROUTES = ("/v1/chat/completions", "/v1/completions")
MODEL_ROUTES = GENERATION_ROUTES + ("/v1/embeddings", "/v1/images/generations",
                                    "/v1/audio/transcriptions", "/v1/audio/translations",
                                    "/v1/audio/speech")


def _route(path):
    """A bounded label: known routes by name, everything else lumped together."""
    if path.startswith("/v1/models"):
        return "/v1/models"
    if path.startswith("/v1/responses"):
        return "/v1/responses"
    if path in MODEL_ROUTES or path in ("/healthz", "/readyz", "/metrics"):
        return path
    return "other"


# The labelled series already made, by metric and label values. prometheus_client keeps
# every child it made anyway (so this grows no further than its own table), but finding
# one again through `labels()` validates and joins the values under a lock each time:
# about a dozen microseconds per request for the seven series a request touches.
_series = {}


def _labelled(metric, *values):
    """`metric.labels(*values)`, made once per worker."""
    child = _series.get((metric, values))
    if child is None:
        child = _series[(metric, values)] = metric.labels(*values)
    return child


def observe(fields, model=""):
    """Record one finished request (called with the log line's fields and the model label)."""
    route = _route(fields["path"])
    status = str(fields["status"])
    _labelled(REQUESTS, route, status, model).inc()
    _labelled(DURATION, route).observe(fields["duration_ms"] / 1000)
    if fields.get("ttft_ms") is not None:
        _labelled(TTFT, model).observe(fields["ttft_ms"] / 1000)
    prompt, completion = fields.get("prompt_tokens"), fields.get("completion_tokens")
    if prompt:
        _labelled(TOKENS, "prompt", model).inc(prompt)
    if completion:
        _labelled(TOKENS, "completion", model).inc(completion)
    key_name = fields.get("key_name")
    if key_name:
        _labelled(KEY_REQUESTS, key_name, status).inc()
        if prompt:
            _labelled(KEY_TOKENS, key_name, "prompt").inc(prompt)
        if completion:
            _labelled(KEY_TOKENS, key_name, "completion").inc(completion)


def _status_label(status):
    return str(status) if isinstance(status, int) and 100 <= status <= 599 else ""


def upstream_error(error):
    """Count one failed upstream attempt (retried ones too) by Cloudflare code and status."""
    UPSTREAM_ERRORS.labels(code_label(error.cf_code), _status_label(error.upstream_status)).inc()


def rate_limited(key_name, limit):
    """Count one request a key's limits refused."""
    RATE_LIMITED.labels(key_name, limit).inc()


def state_store_failed():
    STATE_STORE_UP.set(0)
    STATE_STORE_ERRORS.inc()


def state_store_recovered():
    STATE_STORE_UP.set(1)


def served_degraded():
    DEGRADED.inc()


def exposition():
    """(body, content type) of the current metrics, merged over workers when multiprocess."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
