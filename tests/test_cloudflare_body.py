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


@pytest.mark.parametrize("framed", [
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
