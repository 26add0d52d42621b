"""One log line per request on stdout, JSON by default, written when the response is done.

For a stream "done" means the last byte went out (or the client left), so the line
is written from the response's close callback, with the figures the relay filled in
on the way: time to first byte and first token, tokens, upstream status, Cloudflare
error code, and which account served it (its position in the pool, never its id).
Keys appear only as a short hash label and a stored key's name; prompts are never logged.
"""
import logging
import re
import sys
import time
from dataclasses import dataclass

import orjson
from flask import g, request

log = logging.getLogger("gateway.request")


@dataclass
class RequestStats:
    """Figures about one request, filled in as it goes."""

    started: float = 0.0
    model: str | None = None
    stream: bool | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    upstream_status: int | None = None
    cf_code: int | None = None
    account: int | None = None
    ttfb_ms: float | None = None
    ttft_ms: float | None = None
    # Why an answer ended early after its headers went out: the code of a stream's error
    # event, `client_gone` or `client_write_timeout`.
    error: str | None = None
    # Size of what was asked for, never its content: inputs (texts, images, files) and bytes.
    inputs: int | None = None
    input_bytes: int | None = None
    # The model as a metrics label: set only once the model passed the allow-list, so that
    # clients cannot grow the label set with made-up names. Not logged.
    model_label: str = ""
    # Content chunks a stream wrote to the client, and whether its end (last chunk, usage,
    # [DONE]) went out too: a stream cut short is charged what it relayed, whatever
    # Cloudflare reported (gateway.state.guard). None: not a relayed stream. Not logged.
    streamed_tokens: int = 0
    stream_complete: bool | None = None
    # Run once when a stream's end went out, before the response's last bytes: the per-key
    # settlement (gateway.state.guard), so that a client sending its next request as soon
    # as it has read the response finds this one counted. Not logged.
    when_final: object = None

    def elapsed_ms(self):
        return round((time.perf_counter() - self.started) * 1000, 2)

    def first_byte(self):
        if self.ttfb_ms is None:
            self.ttfb_ms = self.elapsed_ms()

    def first_token(self):
        if self.ttft_ms is None:
            self.ttft_ms = self.elapsed_ms()

    def final(self):
        """The usage is final: run `when_final` (once)."""
        callback, self.when_final = self.when_final, None
        if callback is not None:
            callback()

    def usage(self, usage):
        if usage:
            self.prompt_tokens = usage.get("prompt_tokens")
            self.completion_tokens = usage.get("completion_tokens")


def current_stats():
    """This request's stats (a throwaway object outside a request)."""
    stats = g.get("stats")
    return stats if stats is not None else RequestStats(started=time.perf_counter())


class JsonFormatter(logging.Formatter):
    """Log records as one JSON object per line; `extra={"fields": {...}}` is merged in."""

    converter = time.gmtime  # the time field says Z: UTC whatever the machine's zone

    def format(self, record):
        stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z"
        entry = {"time": stamp,
                 "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


# Characters that could end a log line or fake one in a terminal: C0 and C1 controls, DEL,
# and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(text):
    """`text` with control characters written as escapes, so it stays on its line."""
    text = str(text)
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", text)


def _value(value):
    """A key=value value: quoted when it holds a space, a quote or an `=`, then escaped."""
    text = str(value)
    if text == "" or any(c in text for c in ' "='):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return _escape(text)


class TextFormatter(logging.Formatter):
    """Human-readable lines, with the request fields as key=value pairs.

    Every field and the message are escaped: a request path holding `%0a` must not be able
    to start a forged log line.
    """

    def format(self, record):
        fields = getattr(record, "fields", {})
        tail = " ".join(f"{k}={_value(v)}" for k, v in fields.items() if v is not None)
        line = (f"{self.formatTime(record)} {record.levelname} {record.name}: "
                f"{_escape(record.getMessage())}")
        line = f"{line} {tail}" if tail else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level, fmt):
    """Send the gateway's logs to stdout in the chosen format (once per process)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.installed_by_gateway = True
    gateway_log = logging.getLogger("gateway")
    others = [h for h in gateway_log.handlers if not getattr(h, "installed_by_gateway", False)]
    gateway_log.handlers[:] = [*others, handler]
    gateway_log.setLevel(level.upper())
    gateway_log.propagate = False


def start_request():
    """before_request: start the clock."""
    g.stats = RequestStats(started=time.perf_counter())
    request.environ["gateway.stats"] = g.stats  # for the client deadlines (gateway.ops.client_io)


def finish_request(response):
    """after_request: write the line when the body is done (streams: at their end)."""
    stats = g.get("stats") or RequestStats(started=time.perf_counter())
    base = {"request_id": g.get("request_id"), "method": request.method, "path": request.path,
            "status": response.status_code, "client": request.remote_addr,
            "key": g.get("key_label"), "key_name": _key_name()}
    response.call_on_close(lambda: _write(base, stats))
    return response


def _key_name():
    """The stored key's name (API_KEYS keys: "(api_keys)"); never the key."""
    principal = g.get("principal")
    return principal.metrics_name if principal is not None else None


def _write(base, stats):
    fields = {**base, "duration_ms": stats.elapsed_ms(), **vars(stats)}
    del fields["started"]
    model_label = fields.pop("model_label")
    del fields["streamed_tokens"], fields["stream_complete"], fields["when_final"]
    if not stats.stream:
        fields.pop("ttfb_ms")
        fields.pop("ttft_ms")
    log.info("request", extra={"fields": fields})
    from gateway.ops import metrics  # the metrics read the same figures
    metrics.observe(fields, model_label)


def init_app(app):
    """Install the clock and the per-request line."""
    configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])
    app.before_request(start_request)
    app.after_request(finish_request)
