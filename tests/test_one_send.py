"""gunicorn's response writer with the head in the first body send (gateway/ops/one_send.py).

Each row drives gunicorn's own Response and OneSendResponse the way a worker does
(start_response, write each piece, close) on a socket that records every sendall:
the bytes on the wire must be identical, and the head must share a send with the
first body bytes, never wait past the write() that produced it.
"""
import re

import pytest
from gunicorn.config import Config
from gunicorn.http import wsgi

from gateway.ops.one_send import OneSendResponse


class Req:
    def __init__(self, method="GET", version=(1, 1)):
        self.method, self.version = method, version

    def should_close(self):
        return False


class RecordingSocket:
    def __init__(self):
        self.sends = []

    def sendall(self, data):
        self.sends.append(bytes(data))


def serve(response_class, method, version, status, headers, pieces):
    sock = RecordingSocket()
    response = response_class(Req(method, version), sock, Config())
    response.start_response(status, headers)
    for piece in pieces:
        response.write(piece)
    response.close()
    return sock.sends


def undated(sends):
    return re.sub(rb"\r\nDate: [^\r]*", b"", b"".join(sends))


JSON = [("Content-Type", "application/json"), ("Content-Length", "11")]
SSE = [("Content-Type", "text/event-stream")]

CASES = [
    # id, method, version, status, headers, pieces, sends expected with OneSendResponse
    ("json-body", "GET", (1, 1), "200 OK", JSON, [b'{"ok":true}'], 1),
    ("sse-chunked", "POST", (1, 1), "200 OK", SSE, [b"data: 1\n\n", b"data: 2\n\n"], 3),
    ("sse-empty-piece-first", "POST", (1, 1), "200 OK", SSE, [b"", b"data: 1\n\n"], 3),
    ("no-pieces", "GET", (1, 1), "200 OK", JSON, [], 1),
    ("head", "HEAD", (1, 1), "200 OK", JSON, [b'{"ok":true}'], 1),
    ("no-content", "DELETE", (1, 1), "204 No Content", [], [b""], 1),
    ("http-1.0", "GET", (1, 0), "200 OK", [("Content-Type", "text/plain")], [b"a", b"b"], 2),
]


@pytest.mark.parametrize("method, version, status, headers, pieces, sends",
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_same_bytes_fewer_sends(method, version, status, headers, pieces, sends):
    plain = serve(wsgi.Response, method, version, status, headers, pieces)
    one = serve(OneSendResponse, method, version, status, headers, pieces)
    assert undated(one) == undated(plain)
    assert len(one) == sends
    assert one[0].startswith(b"HTTP/1.")


def test_head_never_waits_past_its_write():
    """A stream's head and first event leave in the write that produced them."""
    sock = RecordingSocket()
    response = OneSendResponse(Req("POST"), sock, Config())
    response.start_response("200 OK", SSE)
    response.write(b"")
    assert len(sock.sends) == 1 and sock.sends[0].endswith(b"\r\n\r\n")
    response.write(b"data: 1\n\n")
    assert sock.sends[1] == b"9\r\ndata: 1\n\n\r\n"
