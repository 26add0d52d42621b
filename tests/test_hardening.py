"""Hardening end to end: slow and stalled clients, restarts, broken request bodies, slow ends.

The real gunicorn + gevent gateway in front of the fake Workers AI, driven over raw
sockets where a well-behaved client library could not misbehave the way these tests
need (stop reading, send a body slowly, break the chunked framing). Helpers and the
secret checks come from the resilience suite.
"""
import json
import signal
import socket
import threading
import time

import pytest
import requests

from tests.fake_workers_ai import FakeWorkersAI
from tests.openai_spec import validate_error
from tests.sse_client import text_of
from tests.test_resilience import A, CLASSIC, KEY, TOKENS, gateway

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def fake():
    with FakeWorkersAI(accounts=TOKENS) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(fake):
    fake.reset()
    yield


@pytest.fixture(scope="module")
def strict(fake, tmp_path_factory):
    """Short client deadlines: 1 s for a whole request body, 1.5 s for each write."""
    log_path = tmp_path_factory.mktemp("hardening") / "strict.log"
    with gateway(fake, log_path, accounts=(A,), CLIENT_BODY_TIMEOUT="1",
                 CLIENT_WRITE_TIMEOUT="1.5", STREAM_HEARTBEAT="0.3") as gw:
        yield gw


def request_bytes(gw, body, request_id, chunked=False, path="/v1/chat/completions"):
    host, port = gw.address
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nX-Request-ID: {request_id}\r\n")
    if chunked:
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + body
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def connect(gw, receive_buffer=None):
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(20)
    sock.connect(gw.address)
    return sock


def read_answer(sock):
    """(status, headers, JSON body) of one non-stream response with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"connection closed before a response: {data!r}"
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in
               (line.partition(":") for line in lines[1:])}
    length = int(headers["content-length"])
    while len(body) < length:
        body += sock.recv(65536)
    assert len(body) == length, "bytes after the answer"
    return int(lines[0].split()[1]), headers, json.loads(body)


def read_response(sock):
    """(status, JSON body) of one non-stream response with a Content-Length."""
    status, _, body = read_answer(sock)
    return status, body


def assert_closed(sock):
    """The server ends the connection: nothing more arrives, then end of file (or a reset)."""
    sock.settimeout(15)  # the server closes at once; a timeout here is the failure
    try:
        rest = sock.recv(65536)
    except ConnectionResetError:
        return
    assert rest == b"", f"the connection stayed open and answered again: {rest[:200]!r}"


def request_line(gw, request_id, timeout=20):
    """The gateway's request log line for `request_id` (waits for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in gw.log_records():
            if record.get("message") == "request" and record.get("request_id") == request_id:
                return record
        time.sleep(0.1)
    raise AssertionError(f"no request line for {request_id}")


def chat_body(content, **extra):
    return json.dumps({"model": CLASSIC, "messages": [{"role": "user", "content": content}],
                       **extra}).encode()


# --------------------------------------------------------------------------------------------
# Clients that stop reading, or send slowly
# --------------------------------------------------------------------------------------------


def test_client_that_stops_reading_a_stream_is_closed_with_its_upstream(fake, strict):
    sock = connect(strict, receive_buffer=4096)
    try:
        body = chat_body("[[tokens=200000]]", stream=True, max_tokens=200000)
        sock.sendall(request_bytes(strict, body, "stalled-stream-1"))
        # Never read: the gateway's writes back up, and must not wait for ever.
        assert fake.wait_for(lambda f: f.streams_started == 1, timeout=20)
        assert fake.wait_for(lambda f: f.streams_aborted == 1, timeout=30), \
            "the upstream stream stayed open behind a client that stopped reading"
        record = request_line(strict, "stalled-stream-1")
        assert record["status"] == 200 and record["error"] == "client_write_timeout"
        assert any("CLIENT_WRITE_TIMEOUT" in r["message"] for r in strict.log_records())
        assert strict.metric("gateway_open_streams") == 0
        assert fake.streams_completed == 0
    finally:
        sock.close()


def test_client_that_stops_reading_an_answer_is_closed(fake, strict):
    """Non-stream answers too: a 10 MB reply to a client that reads nothing."""
    sock = connect(strict, receive_buffer=4096)
    try:
        body = chat_body("[[tokens=1200000]]", max_tokens=1200000)
        sock.sendall(request_bytes(strict, body, "stalled-answer-1"))
        record = request_line(strict, "stalled-answer-1", timeout=40)
        assert record["status"] == 200 and record["error"] == "client_write_timeout"
    finally:
        sock.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_request_body_sent_too_slowly_gets_408(fake, strict, chunked):
    sock = connect(strict)
    try:
        request_id = f"slow-body-{int(chunked)}"
        head = request_bytes(strict, b"", request_id, chunked=chunked)
        if not chunked:
            head = head.replace(b"Content-Length: 0", b"Content-Length: 1000")
        sock.sendall(head + (b"4\r\n" if chunked else b"") + b'{"mo')
        status, headers, error = read_answer(sock)  # before: blocked until the recv timeout
        assert status == 408, error
        validate_error(error)
        assert error["error"]["code"] == "request_timeout"
        assert "CLIENT_BODY_TIMEOUT" in error["error"]["message"]
        # The rest of the slow body must not be read as a next request: the server closes.
        assert headers["connection"] == "close"
        rest = b'del": 1}' if not chunked else b'del\r\n0\r\n\r\n'
        try:
            sock.sendall(rest + request_bytes(strict, chat_body("next"), f"{request_id}-next"))
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed already
        assert_closed(sock)
    finally:
        sock.close()
    assert fake.requests == []


# --------------------------------------------------------------------------------------------
# Broken request bodies are the client's 400
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("framing, half_close", [
    pytest.param(b"zz\r\n{}\r\n0\r\n\r\n", False, id="bad-chunk-size"),
    pytest.param(b"2\r\n{}XX0\r\n\r\n", False, id="missing-crlf"),
    pytest.param(b'9\r\n{"model":', True, id="aborted-mid-chunk"),
])
def test_malformed_or_aborted_chunked_body_is_a_400_not_a_500(fake, strict, framing, half_close):
    request_id = f"broken-body-{framing[:2].hex()}-{int(half_close)}"
    sock = connect(strict)
    try:
        sock.sendall(request_bytes(strict, framing, request_id, chunked=True))
        if half_close:
            sock.shutdown(socket.SHUT_WR)  # the client is done sending: the body stops short
        status, headers, error = read_answer(sock)
        assert status == 400, error
        validate_error(error)
        assert headers["connection"] == "close"  # the framing is lost: so is the connection
        assert_closed(sock)
    finally:
        sock.close()
    assert request_line(strict, request_id)["status"] == 400
    log = strict.log_path.read_text(errors="replace")
    assert "Traceback" not in log and '"status":500' not in log.replace(" ", "")
    assert fake.requests == []


@pytest.mark.parametrize("body, wrong_key, status, connection", [
    pytest.param(b'{"model": "x"}', False, 400, "keep-alive", id="invalid-body-read-to-its-end"),
    pytest.param(chat_body("hi"), True, 401, "close", id="401-before-the-body-was-read"),
    pytest.param(b"{" + b" " * (1 << 20) + b"}", False, 413, "close", id="413-body-not-read"),
])
def test_error_closes_the_connection_only_when_the_body_was_not_read(
        fake, strict, body, wrong_key, status, connection):
    sock = connect(strict)
    try:
        raw = request_bytes(strict, body, f"close-{status}")
        sock.sendall(raw.replace(KEY.encode(), b"sk-wrong-key") if wrong_key else raw)
        got, headers, error = read_answer(sock)
        assert got == status, error
        validate_error(error)
        assert headers["connection"] == connection
        if connection == "close":
            assert_closed(sock)
        else:  # the same connection serves the next request
            sock.sendall(request_bytes(strict, chat_body("again"), "close-next"))
            assert read_response(sock)[0] == 200
    finally:
        sock.close()


# --------------------------------------------------------------------------------------------
# Restarts and slow upstream ends
# --------------------------------------------------------------------------------------------


def test_sigterm_ends_a_long_stream_with_one_server_shutting_down_event(fake, tmp_path):
    """GRACEFUL_TIMEOUT 3 s, a 12 s stream: the client gets one retryable error event and
    the request its log line before the worker exits; nothing is cut silently."""
    with gateway(fake, tmp_path / "graceful.log", accounts=(A,), GRACEFUL_TIMEOUT="3") as gw:
        result = {}

        def consume():
            result["reply"] = gw.post("/v1/chat/completions", json.loads(chat_body(
                "[[tokens=120]] [[delay=0.1]]", stream=True)),
                headers={"X-Request-ID": "restart-stream-1"})
            gw.session.close()

        reader = threading.Thread(target=consume)
        reader.start()
        assert fake.wait_for(lambda f: f.streams_started == 1, timeout=10)
        gw.process.send_signal(signal.SIGTERM)
        reader.join(timeout=30)
        assert not reader.is_alive()
        assert gw.process.wait(timeout=30) == 0
        reply = result["reply"]
        events = reply.events()
        errors = [e for e in events if isinstance(e, dict) and "error" in e]
        assert len(errors) == 1 and events[-1] is errors[0] and "[DONE]" not in events
        validate_error(errors[0])
        assert errors[0]["error"]["code"] == "server_shutting_down"
        assert text_of(events).startswith("t0 t1")
        record = request_line(gw, "restart-stream-1", timeout=1)
        assert record["status"] == 200 and record["error"] == "server_shutting_down"
        assert "graceful timeout" not in gw.log_path.read_text().lower()
        assert fake.wait_for(lambda f: f.streams_aborted == 1, timeout=5)


def test_response_ends_right_after_done_when_upstream_is_slow_to_close(fake, strict):
    """The body's end comes 3 s after [DONE]: the client's response ends at [DONE], and the
    upstream connection is still drained and reused."""
    fake.add_fault("slow_close", delay=3.0)
    with requests.post(f"{strict.base_url}/v1/chat/completions", stream=True, timeout=20,
                       headers={"Authorization": f"Bearer {KEY}"},
                       json=json.loads(chat_body("slow close", stream=True))) as rv:
        data = b"".join(rv.iter_content(chunk_size=None))
    assert fake.bodies_ended == 0, "the client's response waited for the upstream body's end"
    assert data.rstrip().endswith(b"data: [DONE]")
    assert fake.wait_for(lambda f: f.bodies_ended == 1, timeout=10)
    connections = fake.connections_total
    time.sleep(0.5)  # the background drain hands the connection back to the pool
    assert strict.sdk_stream("again") == "Echo: again"
    assert fake.connections_total == connections, "the drained upstream connection was not reused"
