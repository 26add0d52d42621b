"""The per-request log line (gateway/ops/request_log.py) and request ids (gateway/ops/request_id.py).

Lines are read from the `gateway.request` logger; a Flask test response is closed
(`buffered=True`, or explicitly) before reading, since the line is written when the
response is closed, as a WSGI server does after the last byte.
"""
import io
import json
import logging
import shlex
import re

import pytest
import responses

from gateway import create_app
from gateway.auth import key_label
from gateway.ops.request_log import JsonFormatter
from tests.conftest import (ACCOUNT, API_BASE, KEY, MODEL, NoRetries, RUN_URL, TOKEN, TestConfig,
                            load_data)
from tests.openai_spec import validate_error

CHAT = "/v1/chat/completions"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hello there"}]}
OK = load_data("cf_chat_classic_ok.json")
FIELDS = {"time", "request_id", "method", "path", "status", "duration_ms", "model", "stream",
          "prompt_tokens", "completion_tokens", "upstream_status", "cf_code", "account", "key",
          "client"}
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class TwoAccounts(TestConfig):
    CLOUDFLARE_ACCOUNTS = [("acct-one-id", "tok-one-secret"), ("acct-two-id", "tok-two-secret")]


class TextFormat(TestConfig):
    LOG_FORMAT = "text"


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(JsonFormatter().format(record))


@pytest.fixture
def lines(app):
    """The JSON lines of `gateway.request` written during the test (after the app is built)."""
    handler = _Lines()
    logger = logging.getLogger("gateway.request")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def entries(lines):
    return [json.loads(line) for line in lines]


def only_entry(lines):
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def stream_body():
    return load_data("cf_stream_classic.sse")


# ---------------------------------------------------------------- one line per request


def test_one_json_line_per_request_with_every_field(client, auth, upstream, lines):
    upstream.add(responses.POST, RUN_URL + MODEL, json=OK)
    rv = client.post(CHAT, json=BODY, headers=auth, buffered=True)
    assert rv.status_code == 200
    entry = only_entry(lines)
    assert FIELDS <= set(entry)
    usage = OK["result"]["usage"]
    assert entry["request_id"] == rv.headers["X-Request-ID"]
    assert entry["method"] == "POST"
    assert entry["path"] == CHAT
    assert entry["status"] == 200
    assert isinstance(entry["duration_ms"], (int, float)) and entry["duration_ms"] >= 0
    assert entry["model"] == MODEL
    assert entry["stream"] is False
    assert entry["prompt_tokens"] == usage["prompt_tokens"]
    assert entry["completion_tokens"] == usage["completion_tokens"]
    assert entry["upstream_status"] == 200
    assert entry["cf_code"] is None
    assert entry["account"] == 0
    assert entry["key"] == key_label(KEY)
    assert entry["client"] == "127.0.0.1"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", entry["time"])


def test_each_request_writes_its_own_line(client, auth, lines):
    for _ in range(3):
        client.get("/healthz", buffered=True)
    ids = [e["request_id"] for e in entries(lines)]
    assert len(ids) == 3
    assert len(set(ids)) == 3


def test_line_never_holds_key_token_or_account_id(client, auth, upstream, lines):
    upstream.add(responses.POST, RUN_URL + MODEL, json=OK)
    client.post(CHAT, json=BODY, headers=auth, buffered=True)
    client.post(CHAT, json=BODY, headers={"Authorization": "Bearer sk-wrong-key-zz"},
                buffered=True)
    text = "\n".join(lines)
    assert len(lines) == 2
    for secret in (KEY, TOKEN, ACCOUNT, API_BASE, "sk-wrong-key-zz", "Hello there"):
        assert secret not in text


@pytest.mark.parametrize("config_class", [TwoAccounts])
def test_account_is_position_never_id(client, auth, upstream, lines):
    for account in ("acct-one-id", "acct-two-id"):
        upstream.add(responses.POST, f"{API_BASE}/accounts/{account}/ai/run/{MODEL}", json=OK)
    client.post(CHAT, json=BODY, headers=auth, buffered=True)
    client.post(CHAT, json=BODY, headers=auth, buffered=True)
    assert [e["account"] for e in entries(lines)] == [0, 1]
    text = "\n".join(lines)
    for secret in ("acct-one-id", "acct-two-id", "tok-one-secret", "tok-two-secret"):
        assert secret not in text


def test_key_is_short_label_of_each_key(client, lines):
    client.get("/v1/nope", headers={"Authorization": f"Bearer {KEY}"}, buffered=True)
    client.get("/v1/nope", headers={"Authorization": "Bearer sk-second-key"}, buffered=True)
    labels = [e["key"] for e in entries(lines)]
    assert labels == [key_label(KEY), key_label("sk-second-key")]
    assert labels[0] != labels[1]
    assert all(re.fullmatch(r"[0-9a-f]{8}", label) for label in labels)


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="no-key"),
    pytest.param({"Authorization": "Bearer sk-wrong-key-zz"}, id="wrong-key"),
])
def test_refused_request_is_logged_without_key(client, upstream, lines, headers):
    client.post(CHAT, json=BODY, headers=headers, buffered=True)
    entry = only_entry(lines)
    assert entry["status"] == 401
    assert entry["key"] is None
    assert entry["upstream_status"] is None


@pytest.mark.parametrize("config_class", [NoRetries])
def test_upstream_failure_is_logged_with_status_and_cf_code(client, auth, upstream, lines):
    upstream.add(responses.POST, RUN_URL + MODEL, status=429, json=load_data("cf_error_3040.json"))
    rv = client.post(CHAT, json=BODY, headers=auth, buffered=True)
    assert rv.status_code == 429
    entry = only_entry(lines)
    assert entry["status"] == 429
    assert entry["upstream_status"] == 429
    assert entry["cf_code"] == 3040
    assert entry["model"] == MODEL


def test_health_line_has_nulls_for_generation_fields(client, lines):
    client.get("/healthz", buffered=True)
    entry = only_entry(lines)
    assert FIELDS <= set(entry)
    assert entry["path"] == "/healthz"
    assert entry["method"] == "GET"
    assert entry["status"] == 200
    for field in ("model", "stream", "prompt_tokens", "completion_tokens", "upstream_status",
                  "cf_code", "account", "key"):
        assert entry[field] is None


# ---------------------------------------------------------------- streams


def test_stream_line_is_written_when_stream_ends(client, auth, upstream, lines):
    upstream.add(responses.POST, RUN_URL + MODEL, body=stream_body(),
                 content_type="text/event-stream")
    rv = client.post(CHAT, json={**BODY, "stream": True}, headers=auth, buffered=False)
    assert rv.status_code == 200
    assert lines == []  # headers sent, body not yet consumed: no line
    body = b"".join(rv.response)
    assert body.endswith(b"data: [DONE]\n\n")
    rv.close()
    entry = only_entry(lines)
    assert FIELDS <= set(entry)
    assert entry["stream"] is True
    assert entry["status"] == 200
    assert entry["model"] == MODEL
    assert entry["upstream_status"] == 200
    assert entry["account"] == 0
    assert isinstance(entry["ttfb_ms"], (int, float))
    assert isinstance(entry["ttft_ms"], (int, float))
    assert 0 <= entry["ttfb_ms"] <= entry["ttft_ms"] <= entry["duration_ms"]
    assert entry["prompt_tokens"] and entry["completion_tokens"]


def test_stream_line_is_written_once_when_client_leaves_early(client, auth, upstream, lines):
    upstream.add(responses.POST, RUN_URL + MODEL, body=stream_body(),
                 content_type="text/event-stream")
    rv = client.post(CHAT, json={**BODY, "stream": True}, headers=auth, buffered=False)
    next(iter(rv.response))
    assert lines == []
    rv.close()
    entry = only_entry(lines)
    assert entry["stream"] is True
    assert "ttfb_ms" in entry


# ---------------------------------------------------------------- text format


@pytest.fixture
def stdout_of():
    """Build an app with a config and read what its stdout handler writes."""
    def build(config_class):
        app = create_app(config_class)
        handler = next(h for h in logging.getLogger("gateway").handlers
                       if getattr(h, "installed_by_gateway", False))
        buffer = io.StringIO()
        handler.setStream(buffer)
        return app, buffer

    yield build
    create_app(TestConfig)  # a fresh stdout handler for later tests


def test_text_format_writes_plain_line(stdout_of, upstream):
    app, out = stdout_of(TextFormat)
    app.test_client().get("/healthz", buffered=True)
    request_lines = [line for line in out.getvalue().splitlines() if "/healthz" in line]
    assert len(request_lines) == 1
    line = request_lines[0]
    with pytest.raises(ValueError):
        json.loads(line)
    assert "path=/healthz" in line
    assert "status=200" in line


def test_json_format_writes_json_line_to_stdout(stdout_of, upstream):
    app, out = stdout_of(TestConfig)
    app.test_client().get("/healthz", buffered=True)
    request_lines = [line for line in out.getvalue().splitlines() if "/healthz" in line]
    assert len(request_lines) == 1
    entry = json.loads(request_lines[0])
    assert entry["path"] == "/healthz"
    assert entry["status"] == 200


# ---------------------------------------------------------------- X-Request-ID


@pytest.mark.parametrize("request_id", ["abc-123", "req_01HZX3.k:9", "a" * 128])
def test_sane_request_id_is_echoed_and_logged(client, lines, request_id):
    rv = client.get("/healthz", headers={"X-Request-ID": request_id}, buffered=True)
    assert rv.headers["X-Request-ID"] == request_id
    assert only_entry(lines)["request_id"] == request_id


@pytest.mark.parametrize("request_id", [
    pytest.param("a" * 129, id="too-long"),
    pytest.param("abc 123", id="space"),
    pytest.param('x"}, "status": 200, "y": "', id="json-injection"),
    pytest.param("line\\nbreak", id="backslash"),
    pytest.param("ünïcode", id="non-ascii"),
])
def test_insane_request_id_is_replaced_everywhere(client, lines, request_id):
    rv = client.get("/healthz", headers={"X-Request-ID": request_id}, buffered=True)
    echoed = rv.headers["X-Request-ID"]
    assert echoed != request_id
    assert REQUEST_ID.match(echoed)
    assert only_entry(lines)["request_id"] == echoed


@pytest.mark.parametrize("request_id", [None, "client-id-42"])
def test_error_message_includes_request_id(client, upstream, lines, request_id):
    headers = {"X-Request-ID": request_id} if request_id else {}
    rv = client.post(CHAT, json=BODY, headers=headers, buffered=True)
    body = rv.get_json()
    validate_error(body)
    expected = request_id or rv.headers["X-Request-ID"]
    assert rv.headers["X-Request-ID"] == expected
    assert expected in body["error"]["message"]
    assert only_entry(lines)["request_id"] == expected


def test_upstream_error_message_includes_request_id(client, auth, upstream, lines):
    upstream.add(responses.POST, RUN_URL + MODEL, status=400, json=load_data("cf_error_5006.json"))
    rv = client.post(CHAT, json=BODY, headers={**auth, "X-Request-ID": "trace-77"}, buffered=True)
    assert rv.status_code == 400
    assert "trace-77" in rv.get_json()["error"]["message"]


def test_stream_has_request_id_header(client, auth, upstream):
    upstream.add(responses.POST, RUN_URL + MODEL, body=stream_body(),
                 content_type="text/event-stream")
    rv = client.post(CHAT, json={**BODY, "stream": True}, headers={**auth, "X-Request-ID": "s-1"},
                     buffered=True)
    assert rv.headers["X-Request-ID"] == "s-1"


@pytest.mark.parametrize("path, forged", [
    pytest.param("/v1/models%0a2026-01-01 INFO gateway.request: request status=200",
                 "\n2026-01-01 INFO", id="newline"),
    pytest.param("/v1/x%0d%0aforged", "\r\nforged", id="crlf"),
    pytest.param("/v1/x%e2%80%a8forged", "\u2028forged", id="line-separator"),
    pytest.param("/v1/x%1b[31mred", "\x1b[31m", id="terminal-escape"),
    pytest.param("/v1/x%20status=200", None, id="fake-field"),
])
def test_text_log_escapes_control_characters(stdout_of, upstream, auth, path, forged):
    """LOG_FORMAT=text: a path cannot end its line, start a forged one or fake a field."""
    app, out = stdout_of(TextFormat)
    app.test_client().get(path, headers=auth, buffered=True)
    text = out.getvalue()
    request_lines = [line for line in text.splitlines() if " gateway.request: request " in line]
    assert len(request_lines) == 1, text
    assert forged is None or forged not in text
    fields = shlex.split(request_lines[0].split(" gateway.request: request ", 1)[1])
    assert [f for f in fields if f.startswith("status=")] == ["status=404"], fields
    assert len([f for f in fields if f.startswith("path=")]) == 1, fields
