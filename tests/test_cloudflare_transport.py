"""The trimmed upstream adapter (gateway/cloudflare/transport.py).

The request must be byte for byte what urllib3 sends, in one send() when the body is
bytes; the liveness check must tell an open pooled connection from one the server
closed; and the adapter must serve a real HTTP exchange, reusing its connection.
"""
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


def sent(connection_class, body):
    connection = connection_class("127.0.0.1", 9)
    connection.sock = RecordingSocket()
    headers = {"Content-Type": "application/json"}
    if body is not None:
        headers["Content-Length"] = str(len(body))
    connection.request("POST", "/ai/run/m", body=body, headers=headers)
    return connection.sock.sends


@pytest.mark.parametrize("body, sends", [(b'{"prompt":"hi"}', 1), (None, 1), (b"", 1)],
                         ids=["json-body", "no-body", "empty-body"])
def test_one_send_same_bytes(body, sends):
    ours = sent(OneSendConnection, body)
    assert b"".join(ours) == b"".join(sent(HTTPConnection, body))
    assert len(ours) == sends


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
