"""Requests gunicorn refuses before the app runs get OpenAI's JSON envelope, then a close.

The real gunicorn + gevent gateway (gateway/ops/server_errors.py and closing.py are
installed in its workers) driven over raw sockets, since no HTTP client library sends
a malformed request line or a 10 KB header on purpose.
"""
import json
import socket

import pytest

from tests.fake_workers_ai import FakeWorkersAI
from tests.openai_spec import validate_error
from tests.test_resilience import A, KEY, TOKENS, gateway

pytestmark = pytest.mark.timeout(120)

SECRET = "sk-leaked-in-a-bad-request-5Yq8"


@pytest.fixture(scope="module")
def fake():
    with FakeWorkersAI(accounts=TOKENS) as server:
        yield server


@pytest.fixture(scope="module")
def gw(fake, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("server-errors") / "gateway.log"
    with gateway(fake, log_path, accounts=(A,)) as handle:
        yield handle


@pytest.fixture(autouse=True)
def fresh(fake):
    fake.reset()
    yield


def exchange(gw, raw):
    """Send `raw`, read until the server closes: (status, headers, body bytes)."""
    with socket.create_connection(gw.address, timeout=20) as sock:
        sock.sendall(raw)
        data = b""
        while piece := sock.recv(65536):  # the server must close: a timeout fails the test
            data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in
               (line.partition(":") for line in lines[1:])}
    assert int(headers["content-length"]) == len(body), "one answer, then the close"
    return int(lines[0].split()[1]), headers, body


def get(*header_lines, line="GET /v1/models HTTP/1.1"):
    head = [line, "Host: gateway", f"Authorization: Bearer {KEY}", *header_lines]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")


BAD_REQUESTS = [
    pytest.param(b"GARBAGE\r\n\r\n", 400, "invalid_http_request", id="no-request-line"),
    pytest.param(get(line="GET /v1/models HTTP/1.1 extra"), 400, "invalid_http_version",
                 id="request-line-extra-part"),
    pytest.param(get(line=f"GET /v1/models?key={SECRET}\x01 HTTP/1.1"), 400,
                 "invalid_http_request", id="control-char-in-target"),
    pytest.param(get(line="G(T /v1/models HTTP/1.1"), 400, "invalid_http_method",
                 id="invalid-method"),
    pytest.param(get(line="GET /v1/models HTTP/9.9"), 400, "invalid_http_version",
                 id="http-9.9"),
    pytest.param(get(line="GET /v1/models HTTX/1.1"), 400, "invalid_http_version",
                 id="not-http"),
    pytest.param(get(line="GET /" + "a" * 9000 + " HTTP/1.1"), 414, "request_line_too_long",
                 id="request-line-too-long"),
    pytest.param(get(*(f"X-Filler-{n}: {n}" for n in range(120))), 431,
                 "request_header_fields_too_large", id="too-many-headers"),
    pytest.param(get(f"X-Big: {SECRET}" + "b" * 9000), 431, "request_header_fields_too_large",
                 id="header-line-too-large"),
    pytest.param(get(f"no colon {SECRET}"), 400, "invalid_header", id="header-without-colon"),
    pytest.param(get(f"Bad Name: {SECRET}"), 400, "invalid_header", id="space-in-header-name"),
    pytest.param(get(f"X-Nul: {SECRET}\x00"), 400, "invalid_header", id="nul-in-header-value"),
    pytest.param(get("X-Folded: a", f" {SECRET}"), 400, "invalid_header", id="obsolete-folding"),
    pytest.param(get("Content-Length: 2", "Content-Length: 3"), 400, "invalid_header",
                 id="two-content-lengths"),
    pytest.param(get("Content-Length: -1"), 400, "invalid_header", id="negative-content-length"),
    pytest.param(get("Content-Length: 2", "Transfer-Encoding: chunked"), 400, "invalid_header",
                 id="content-length-and-chunked"),
    pytest.param(get("Transfer-Encoding: br, chunked"), 501, "unsupported_transfer_coding",
                 id="brotli-transfer-coding"),
    pytest.param(get("Expect: 200-ok"), 417, "expectation_failed", id="unknown-expectation"),
]


@pytest.mark.parametrize("raw, status, code", BAD_REQUESTS)
def test_request_gunicorn_refuses_is_json_in_openai_envelope(fake, gw, raw, status, code):
    got, headers, body = exchange(gw, raw)
    assert got == status, body
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error = json.loads(body)
    validate_error(error)
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["code"] == code and error["error"]["param"] is None
    assert error["error"]["message"].endswith(".") and "<" not in error["error"]["message"]
    assert SECRET not in body.decode() and KEY not in body.decode()
    assert fake.requests == []


def test_gateway_serves_the_next_connection_after_a_refused_request(gw):
    exchange(gw, b"GARBAGE\r\n\r\n")
    assert gw.session.get(f"{gw.base_url}/v1/models", timeout=10).status_code == 200
    assert SECRET not in gw.log_path.read_text(errors="replace")


def test_refused_request_with_a_body_still_coming_gets_its_answer(gw):
    """The client is still sending (a big body after a bad header): the answer is not lost
    to a connection reset, and the server closes its side after it."""
    body = b"x" * (4 << 20)
    with socket.create_connection(gw.address, timeout=20) as sock:
        sock.sendall(get("Bad Name: 1", f"Content-Length: {len(body)}"))
        try:
            sock.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may stop reading early; the answer must still be readable
        data = b""
        while piece := sock.recv(65536):
            data += piece
    assert data.startswith(b"HTTP/1.1 400 ") and b'"code":"invalid_header"' in data
