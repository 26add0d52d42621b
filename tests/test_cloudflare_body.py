"""Reading the upstream body from its socket: chunked decoding, keep-alive, fallbacks."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cloudflare.body import BodyFormatError, ChunkedDecoder, ResponseBody, open_body

BODY = 'data: {"response":"héllo"}\n\ndata: [DONE]\n\n'.encode()
FRAMED = (b"1a\r\n" + BODY[:26] + b"\r\n"
          + hex(len(BODY) - 26)[2:].encode() + b";ext=1\r\n" + BODY[26:] + b"\r\n"
          + b"0\r\nX-Trailer: yes\r\n\r\n")


def decode(pieces):
    decoder = ChunkedDecoder()
    out = b"".join(decoder.feed(piece) for piece in pieces)
    return out, decoder.done


def test_chunked_body_is_decoded_and_its_end_seen():
    assert decode([FRAMED]) == (BODY, True)


def test_chunked_body_without_its_last_chunk_is_not_done():
    assert decode([FRAMED[:FRAMED.index(b"0\r\n")]]) == (BODY, False)


@pytest.mark.parametrize("cut", range(1, len(FRAMED)))
def test_every_cut_decodes_the_same(cut):
    assert decode([FRAMED[:cut], FRAMED[cut:]]) == (BODY, True)


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(1, len(FRAMED) - 1), max_size=30))
def test_any_cuts_decode_the_same(cuts):
    bounds = sorted(cuts)
    pieces = [FRAMED[a:b] for a, b in zip([0, *bounds], [*bounds, len(FRAMED)])]
    assert decode(pieces) == (BODY, True)


@pytest.mark.parametrize("size", [
    pytest.param(b"0" * 17 + b"3", id="17-leading-zeros"),
    pytest.param(b"0" * 100 + b"3", id="100-leading-zeros"),
    pytest.param(b"00000000000000000003;ext=1", id="zeros-and-extension"),
])
def test_chunk_size_with_leading_zeros_is_accepted(size):
    """HTTP allows any number of leading zeros in a chunk size."""
    framed = size + b"\r\nabc\r\n" + b"0" * 20 + b"\r\n\r\n"
    assert decode([framed]) == (b"abc", True)


@pytest.mark.parametrize("framed", [
    pytest.param(b"1" + b"0" * 16 + b"\r\nabc\r\n", id="size-over-16-hex-digits"),
    pytest.param(b"zz\r\nabc\r\n", id="bad-size"),
    pytest.param(b"3\r\nabcXY0\r\n\r\n", id="missing-crlf"),
    pytest.param(b"1" * 2000, id="endless-size-line"),
    pytest.param(b"-1\r\nabc\r\n", id="negative-size"),
    pytest.param(b"+5\r\nabcde\r\n", id="signed-size"),
    pytest.param(b"0x5\r\nabcde\r\n", id="prefixed-size"),
])
def test_broken_framing_is_an_error(framed):
    with pytest.raises(BodyFormatError):
        ChunkedDecoder().feed(framed)


class _Raw:
    def __init__(self, pieces):
        self.pieces = list(pieces)

    def read1(self, amt, decode_content=True):
        return self.pieces.pop(0) if self.pieces else b""


class _Response:
    def __init__(self, headers, pieces):
        self.headers = headers
        self.raw = _Raw(pieces)
        self.closed = False

    def close(self):
        self.closed = True


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="no-socket"),
    pytest.param({"Content-Encoding": "gzip"}, id="compressed"),
])
def test_responses_without_a_usable_socket_fall_back_to_urllib3_reads(headers):
    response = _Response(headers, [b"ab", b"cd"])
    body = open_body(response)
    assert isinstance(body, ResponseBody)
    assert [body.read(1), body.read(1), body.read(1)] == [b"ab", b"cd", b""]
    assert body.complete
    body.release(True, 1.0)
    assert response.closed


# -- the urllib3 / http.client internals SocketBody relies on ---------------------------------


@pytest.fixture(scope="module")
def fake_cloudflare():
    from tests.fake_workers_ai import FakeWorkersAI
    with FakeWorkersAI(accounts={"acct-body": "tok-body"}) as server:
        yield server


def _stream(session, fake, content="internals check"):
    url = f"{fake.base_url}/accounts/acct-body/ai/run/@cf/meta/llama-3.1-8b-instruct"
    return session.post(url, stream=True, headers={"Authorization": "Bearer tok-body",
                                                   "Accept-Encoding": "identity"},
                        json={"messages": [{"role": "user", "content": content}],
                              "stream": True})


def test_socket_body_still_reaches_urllib3_internals(fake_cloudflare):
    """gateway/cloudflare/body.py reads private attributes of urllib3 and http.client, which
    the bench showed to be worth it. If this fails after an upgrade of urllib3 or Python,
    body.py must be updated (or pinned back): the relay would otherwise fall back to the
    slower urllib3 reads."""
    import http.client
    import socket

    import requests
    import urllib3

    from gateway.cloudflare.body import SocketBody

    session = requests.Session()
    response = _stream(session, fake_cloudflare)
    raw = response.raw
    where = f"urllib3 {urllib3.__version__}"
    assert isinstance(raw, urllib3.HTTPResponse), where
    assert isinstance(getattr(raw, "_fp", None), http.client.HTTPResponse), \
        f"{where}: HTTPResponse._fp is no longer http.client's response"
    assert isinstance(getattr(getattr(raw, "_connection", None), "sock", None), socket.socket), \
        f"{where}: HTTPResponse._connection.sock is no longer the connection's socket"
    http_response = raw._fp
    for name in ("chunked", "length", "will_close", "fp"):
        assert hasattr(http_response, name), f"http.client.HTTPResponse has no {name!r}"
    assert http_response.chunked is True and callable(http_response.fp.read1)
    assert callable(raw.release_conn)

    body = open_body(response)
    assert isinstance(body, SocketBody), "open_body fell back to urllib3's reads"
    data = b""
    while not body.complete:
        data += body.read(5.0)
    assert data.endswith(b"data: [DONE]\n\n") and b"internals" in data
    connections = fake_cloudflare.connections_total
    body.release(True, 1.0)
    # The connection went back to the pool: the next request reuses it.
    again = _stream(session, fake_cloudflare, "second")
    second = open_body(again)
    while not second.complete:
        second.read(5.0)
    second.release(True, 1.0)
    assert fake_cloudflare.connections_total == connections, "the connection was not reused"
    session.close()


def test_socket_body_frees_http_clients_read_buffer(fake_cloudflare):
    """Once the socket is read directly, http.client's 8 KiB read buffer (one per open stream)
    is let go of at once; the body still reads to its end and the connection is reused."""
    import requests

    session = requests.Session()
    response = _stream(session, fake_cloudflare)
    http_response = response.raw._fp
    body = open_body(response)
    assert http_response.fp is None, "http.client's reader is kept while the stream is open"
    data = b""
    while not body.complete:
        data += body.read(5.0)
    assert data.endswith(b"data: [DONE]\n\n")
    connections = fake_cloudflare.connections_total
    body.release(True, 1.0)
    again = open_body(_stream(session, fake_cloudflare, "second"))
    while not again.complete:
        again.read(5.0)
    again.release(True, 1.0)
    assert fake_cloudflare.connections_total == connections, "the connection was not reused"
    session.close()
