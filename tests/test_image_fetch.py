"""Safe image fetching (gateway/openai/image_fetch.py): the address check on the socket."""
import http.server
import threading

import pytest

from gateway.openai import image_fetch
from gateway.openai.image_fetch import ImageFetcher, ImageFetchError, is_public

PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 32


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        if self.path == "/hop":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.2:{self.server.server_port}/cat.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)


@pytest.fixture(scope="module")
def port():
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False),
    ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False),
    ("224.0.0.1", False), ("0.0.0.0", False), ("240.0.0.1", False), ("::1", False),
    ("fe80::1", False), ("fc00::1", False), ("::ffff:127.0.0.1", False),
    ("2606:4700:4700::1111", True),
])
def test_is_public(address, public):
    assert is_public(address) is public


def test_connected_address_is_checked_after_dns(port, monkeypatch):
    """127.0.0.1 passes as "public" here; the redirect reaches 127.0.0.2, which is refused
    on the socket itself (the pre-check is bypassed, as a rebinding DNS would)."""
    monkeypatch.setattr(image_fetch, "is_public", lambda address: address == "127.0.0.1")
    monkeypatch.setattr(ImageFetcher, "_precheck", staticmethod(lambda host, port: None))
    fetcher = ImageFetcher(1024, 5)
    assert fetcher.fetch(f"http://127.0.0.1:{port}/cat.png").startswith("data:image/png;base64,")
    with pytest.raises(ImageFetchError, match="private or reserved"):
        fetcher.fetch(f"http://127.0.0.1:{port}/hop")


def test_allow_list_limits_and_trusts_hosts(port):
    fetcher = ImageFetcher(1024, 5, ["localhost"])
    assert fetcher.fetch(f"http://localhost:{port}/cat.png").startswith("data:image/png")
    with pytest.raises(ImageFetchError, match="IMAGE_FETCH_ALLOW_HOSTS"):
        fetcher.fetch(f"http://127.0.0.1:{port}/cat.png")
    with pytest.raises(ImageFetchError, match="larger"):
        ImageFetcher(8, 5, ["localhost"]).fetch(f"http://localhost:{port}/cat.png")
