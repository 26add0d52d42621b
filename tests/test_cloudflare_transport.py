"""The trimmed upstream adapter (gateway/cloudflare/transport.py).

The request must be byte for byte what urllib3 sends, in one send() when the body is
bytes; the liveness check must tell an open pooled connection from one the server
closed; and the adapter must serve a real HTTP exchange, reusing its connection.
"""
import http.client
import http.server
import socket
import threading

import pytest
import requests
from urllib3.connection import HTTPConnection

from gateway.cloudflare.transport import CloudflareAdapter, OneSendConnection


class RecordingSocket:
    def __init__(self):
        self.sends = []

    def sendall(self, data):
        self.sends.append(bytes(data))

    def settimeout(self, timeout):
        pass


def sent(connection_class, body, method="POST", headers=None, host="127.0.0.1", port=9,
         **options):
    connection = connection_class(host, port)
    connection.sock = RecordingSocket()
    if headers is None:
        headers = {"Content-Type": "application/json"}
        if body is not None:
            headers["Content-Length"] = str(len(body))
    connection.request(method, "/ai/run/m?x=1", body=body, headers=headers, **options)
    return connection.sock.sends


CLIENT_HEADERS = {"Authorization": "Bearer t0k3n", "Accept-Encoding": "identity",
                  "Content-Type": "application/json", "Content-Length": "15"}


@pytest.mark.parametrize("body, method, headers, host, port, sends", [
    (b'{"prompt":"hi"}', "POST", None, "127.0.0.1", 9, 1),
    (None, "POST", None, "127.0.0.1", 9, 1),
    (b"", "POST", None, "127.0.0.1", 9, 1),
    (b'{"prompt":"hi"}', "POST", CLIENT_HEADERS, "api.cloudflare.com", 80, 1),
    (b'{"prompt":"hi"}', "POST", {"Content-Type": "audio/wav"}, "localhost", 8080, 1),
    (None, "GET", {"Authorization": "Bearer t"}, "api.cloudflare.com", 80, 1),
    (None, "DELETE", {"User-Agent": "x", "Accept-Encoding": "gzip"}, "10.0.0.1", 9, 1),
    (b"abc", "POST", {"X-Odd": "a\r\n b"}, "127.0.0.1", 9, 1),
    (b"abc", "POST", {"Host": "elsewhere"}, "127.0.0.1", 9, 1),
    (None, "OPTIONS", {}, "127.0.0.1", 9, 1),
], ids=["json-body", "no-body", "empty-body", "client-headers", "audio", "get", "delete",
        "folded-value-urllib3-path", "own-host-urllib3-path", "other-method-urllib3-path"])
def test_one_send_same_bytes(body, method, headers, host, port, sends):
    """Direct or through urllib3, the bytes are urllib3's, and leave in one send()."""
    ours = sent(OneSendConnection, body, method, headers, host, port)
    assert b"".join(ours) == b"".join(sent(HTTPConnection, body, method, headers, host, port))
    assert len(ours) == sends


def test_chunked_body_takes_urllib3s_path():
    ours = sent(OneSendConnection, b"abc", chunked=True)
    assert b"".join(ours) == b"".join(sent(HTTPConnection, b"abc", chunked=True))


@pytest.mark.parametrize("headers, error", [
    ({"X-Bad": "a\r\nInjected: 1"}, ValueError),
    ({"Bad:Name": "x"}, ValueError),
], ids=["crlf-in-value", "colon-in-name"])
def test_unsafe_headers_refused_as_urllib3_does(headers, error):
    with pytest.raises(error):
        sent(OneSendConnection, b"abc", headers=headers)


def test_direct_request_keeps_http_clients_bookkeeping():
    """A second request before the first response was read is refused, as by http.client."""
    connection = OneSendConnection("127.0.0.1", 9)
    connection.sock = RecordingSocket()
    connection.request("POST", "/a", body=b"{}", headers={"Content-Type": "application/json"})
    with pytest.raises(http.client.CannotSendRequest):
        connection.request("POST", "/a", body=b"{}", headers={})
    assert connection._response_options.request_url == "/a"


def test_liveness_check_sees_a_closed_connection():
    ours, theirs = socket.socketpair()
    connection = OneSendConnection("127.0.0.1", 9)
    connection.sock = ours
    try:
        assert connection.is_connected
        theirs.close()
        assert not connection.is_connected
    finally:
        ours.close()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    peers = set()

    def do_POST(self):
        Handler.peers.add(self.client_address)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", "cf=1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_adapter_serves_and_reuses_its_connection():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    adapter = CloudflareAdapter(pool_connections=1, pool_maxsize=2, max_retries=0)
    try:
        url = f"http://127.0.0.1:{server.server_port}/ai/run/m"
        for n in range(3):
            request = requests.Request("POST", url, data=b'{"n":%d}' % n,
                                       headers={"Content-Type": "application/json"}).prepare()
            response = adapter.send(request, timeout=5)
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert response.content == b'{"n":%d}' % n
            assert len(response.cookies) == 0
        assert len(Handler.peers) == 1  # one pooled connection for all three
    finally:
        adapter.close()
        server.shutdown()
        server.server_close()
