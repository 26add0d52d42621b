"""The stream translator and relay: Workers AI SSE in, OpenAI chunks out."""
import json
import os
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.openai.sse import KEEP_ALIVE, SSEDecoder
from gateway.openai.stream_translate import StreamFault, StreamTranslator
from gateway.openai.streaming import client_gone, relay
from tests.openai_spec import validate_chat_chunk, validate_completion_chunk, validate_error

CLASSIC = (
    'data: {"response":"","tool_calls":[],"p":"abdefghijklmnoprstuvxyz12"}\n\n'
    'data: {"response":"Héllo","tool_calls":[],"p":"abdefghij"}\n\n'
    'data: {"response":" wörld 😀","tool_calls":[],"p":"ab"}\n\n'
    'data: {"tool_calls":[],"p":"abdefghijklmn"}\n\n'
    'data: {"response":42,"p":"x"}\n\n'
    'data: {"response":"","usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}\n\n'
    "data: [DONE]\n\n"
).encode()

OPENAI_SHAPED = (
    'data: {"choices":[{"delta":{"content":"","reasoning_content":null,"role":"assistant"},'
    '"finish_reason":null,"index":0,"logprobs":null}],"created":1791402526,"id":"f96",'
    '"model":"@cf/google/gemma-4-26b-a4b-it-external","object":"chat.completion.chunk","p":"pf8",'
    '"usage":{"prompt_tokens":147,"completion_tokens":0,"total_tokens":147,"neurons":1.3}}\n\n'
    'data: {"choices":[{"delta":{"content":"أهلاً"},"finish_reason":null,"index":0}],'
    '"object":"chat.completion.chunk","p":"nn","usage":{"prompt_tokens":0,"completion_tokens":1,"total_tokens":1}}\n\n'
    'data: {"choices":[{"delta":{"content":7},"finish_reason":null,"index":0}],"p":"q"}\n\n'
    'data: {"choices":[{"delta":{"reasoning_content":null},"finish_reason":"stop","index":0,"matched_stop":106}],"p":"l4"}\n\n'
    'data: {"choices":[{"delta":{"reasoning_content":null},"finish_reason":"stop","index":0,"matched_stop":106}],"p":"l4"}\n\n'
    'data: {"choices":[],"object":"chat.completion.chunk","p":"sx","usage":{"prompt_tokens":0,"completion_tokens":1,"total_tokens":1}}\n\n'
    'data: {"response":"","usage":{"prompt_tokens":147,"completion_tokens":2,"total_tokens":149,"neurons":1.77}}\n\n'
    "data: [DONE]\n\n"
    "data: [DONE]\n\n"
).encode()


class FakeRaw:
    """The part of urllib3's response that `relay` reads: read1 over given pieces."""

    def __init__(self, pieces, error=None):
        self.pieces = list(pieces)
        self.error = error

    def read1(self, amt, decode_content=True):
        if self.pieces:
            return self.pieces.pop(0)
        if self.error:
            raise self.error
        return b""


class FakeResponse:
    """A streamed response without a socket: relay falls back to urllib3-style reads."""

    headers = {"Content-Type": "text/event-stream"}

    def __init__(self, pieces, error=None):
        self.raw = FakeRaw(pieces, error)
        self.closed = False

    def close(self):
        self.closed = True


def translator(kind="chat", include_usage=True, max_tokens=256):
    return StreamTranslator(kind, model="m", max_tokens=max_tokens, include_usage=include_usage,
                            completion_id="chatcmpl-1", created=1700000000)


def run(pieces, **kwargs):
    """Relay the pieces; return the raw bytes the client would receive."""
    response = FakeResponse(pieces)
    out = b"".join(relay(response, translator(**kwargs)))
    assert response.closed
    return out


def events(raw):
    """The client's SSE events: parsed JSON payloads, and the literal [DONE]."""
    assert raw.endswith(b"\n\n")
    result = []
    for block in raw.decode().split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        data = block[len("data: "):]
        result.append(data if data == "[DONE]" else json.loads(data))
    return result


def content_of(chunks):
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks
                   if isinstance(c, dict) and c.get("choices"))


@pytest.mark.parametrize("source, text", [
    pytest.param(CLASSIC, "Héllo wörld 😀42", id="classic"),
    pytest.param(OPENAI_SHAPED, "أهلاً7", id="openai-shaped"),
])
def test_stream_follows_the_openai_chunk_contract(source, text):
    chunks = events(run([source]))
    assert chunks[-1] == "[DONE]" and chunks.count("[DONE]") == 1
    body = chunks[:-1]
    for chunk in body:
        validate_chat_chunk(chunk)
        assert chunk["id"] == "chatcmpl-1" and chunk["created"] == 1700000000
        assert chunk["model"] == "m" and "p" not in chunk
    assert body[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert content_of(body) == text
    finals = [c for c in body if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == "stop"
    assert body[-1]["choices"] == [] and body[-1]["usage"]["total_tokens"] in (12, 149)
    for chunk in body[1:-2]:
        assert isinstance(chunk["choices"][0]["delta"]["content"], str)


def test_stream_usage_is_the_cumulative_closing_event():
    usage = events(run([OPENAI_SHAPED]))[-2]["usage"]
    assert usage == {"prompt_tokens": 147, "completion_tokens": 2, "total_tokens": 149}


def test_stream_without_include_usage_has_no_usage_chunk():
    body = events(run([CLASSIC], include_usage=False))[:-1]
    assert all(c["choices"] for c in body)
    assert body[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_reports_length_when_max_tokens_reached():
    body = events(run([CLASSIC], max_tokens=3))[:-1]
    assert body[-2]["choices"][0]["finish_reason"] == "length"


def test_completion_stream_chunks_are_text_completions():
    body = events(run([CLASSIC], kind="completion"))[:-1]
    for chunk in body:
        if chunk["choices"]:
            validate_completion_chunk(chunk, allow_null_finish_reason=True)
    assert "".join(c["choices"][0]["text"] for c in body if c["choices"]) == "Héllo wörld 😀42"


def test_stream_with_crlf_line_endings_is_read_the_same():
    assert run([CLASSIC.replace(b"\n", b"\r\n")]) == run([CLASSIC])


def test_stream_ignores_comments_and_other_fields():
    noisy = b": ping\n\nevent: message\nid: 3\n" + CLASSIC
    assert run([noisy]) == run([CLASSIC])


@pytest.mark.parametrize("cut_at", [
    pytest.param(b"data: [DONE]", id="closing-event-then-eof"),
    pytest.param(b'data: {"response":"","usage"', id="eof-mid-event"),
])
def test_stream_without_done_ends_with_one_error_event(cut_at):
    """Workers AI always ends with [DONE]: an upstream that stops before it (connection
    closed, chunked body ended early) is a broken stream, not a complete one."""
    cut = CLASSIC[: CLASSIC.index(cut_at)]
    chunks = events(run([cut]))
    errors = [c for c in chunks if isinstance(c, dict) and "error" in c]
    assert len(errors) == 1 and chunks[-1] is errors[0] and "[DONE]" not in chunks
    validate_error(errors[0])
    assert "[DONE]" in errors[0]["error"]["message"]
    assert not [c for c in chunks[:-1] if c["choices"] and c["choices"][0]["finish_reason"]]
    assert content_of(chunks[:-1]) == "Héllo wörld 😀42"


@pytest.mark.parametrize("bad, message", [
    pytest.param(b'data: {not json\n\n', "malformed", id="malformed-json"),
    pytest.param(b'data: [1, 2]\n\n', "malformed", id="not-an-object"),
    pytest.param(b'data: {"response": true}\n\n', "malformed", id="content-boolean"),
    pytest.param(b'data: {"error":{"message":"No capacity","code":3040},"success":false}\n\n',
                 "capacity", id="error-event"),
])
def test_stream_fault_mid_stream_becomes_one_error_event(bad, message):
    head = CLASSIC[: CLASSIC.index(b'data: {"tool_calls"')]
    chunks = events(run([head, bad, CLASSIC]))
    errors = [c for c in chunks if isinstance(c, dict) and "error" in c]
    assert len(errors) == 1 and chunks[-1] is errors[0]
    assert "[DONE]" not in chunks
    validate_error(errors[0])
    assert message in errors[0]["error"]["message"]


def test_stream_connection_reset_becomes_one_error_event():
    response = FakeResponse([CLASSIC[:120]], error=ConnectionResetError(104, "reset"))
    chunks = events(b"".join(relay(response, translator())))
    assert "error" in chunks[-1] and response.closed
    assert "Traceback" not in json.dumps(chunks)


def test_client_disconnect_closes_upstream():
    response = FakeResponse([CLASSIC[:60], CLASSIC[60:]])
    stream = relay(response, translator())
    next(stream)
    stream.close()  # what the WSGI server does when the client goes away
    assert response.closed


def test_translator_rejects_nothing_after_done():
    t = translator()
    t.feed(b"[DONE]")
    assert t.feed(b"{not json") == []


def test_decoder_keeps_partial_lines_until_complete():
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a"') == []
    assert decoder.feed(b':1}\n\ndata: [DO') == [b'{"a":1}']
    assert decoder.feed(b"NE]\n\n") == [b"[DONE]"]


def test_fault_is_an_exception_with_the_api_error():
    with pytest.raises(StreamFault) as info:
        translator().feed(b'{"error":{"message":"x","code":3036}}')
    assert info.value.error.status == 429


@pytest.mark.parametrize("source", [pytest.param(CLASSIC, id="classic"),
                                    pytest.param(OPENAI_SHAPED, id="openai-shaped")])
def test_every_single_cut_gives_the_same_output(source):
    expected = run([source])
    for cut in range(1, len(source)):
        assert run([source[:cut], source[cut:]]) == expected, cut


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_cuts_give_the_same_output(data):
    source = data.draw(st.sampled_from([CLASSIC, OPENAI_SHAPED, CLASSIC.replace(b"\n", b"\r\n")]))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(source) - 1), max_size=40)))
    pieces = [source[a:b] for a, b in zip([0, *cuts], [*cuts, len(source)])]
    assert run(pieces) == run([source])


def _high_fd_socket(sock, fd=1500):
    """The same connection under a descriptor number select() cannot handle."""
    import resource
    import socket as socket_module
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= fd:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    os.dup2(sock.fileno(), fd)
    return socket_module.socket(fileno=fd)


@pytest.mark.parametrize("high_fd", [pytest.param(False, id="low-fd"),
                                     pytest.param(True, id="fd-over-1024")])
def test_client_gone_tells_a_live_client_from_a_closed_one(high_fd):
    server_side, client_side = socket.socketpair()
    probe = _high_fd_socket(server_side) if high_fd else server_side
    try:
        assert not client_gone(probe)
        client_side.sendall(b"GET / HTTP/1.1\r\n")  # pipelined bytes are not a hang-up
        assert not client_gone(probe)
        client_side.close()
        probe.recv(100)
        assert client_gone(probe)
    finally:
        probe.close()
        if high_fd:
            server_side.close()


def test_client_gone_without_a_socket_is_false():
    assert client_gone(None) is False


def test_events_before_a_broken_one_in_the_same_read_still_go_out():
    head = CLASSIC[: CLASSIC.index(b'data: {"tool_calls"')]
    chunks = events(run([head + b"data: {broken\n\n" + CLASSIC]))
    assert content_of(chunks[:-1]) == "Héllo wörld 😀" and "error" in chunks[-1]


def test_client_gone_cannot_peek_a_tls_socket_and_says_no():
    """gunicorn serving TLS itself hands the app an SSLSocket, which refuses MSG_PEEK."""
    class TLSLike:
        def __init__(self, sock):
            self.sock = sock

        def fileno(self):
            return self.sock.fileno()

        def recv(self, size, flags=0):
            if flags:
                raise ValueError("non-zero flags not allowed in calls to recv()")
            return self.sock.recv(size)

    server_side, client_side = socket.socketpair()
    try:
        client_side.sendall(b"x")
        assert client_gone(TLSLike(server_side)) is False
    finally:
        server_side.close()
        client_side.close()


def test_a_null_error_field_is_not_a_fault():
    chunks = translator().feed(b'{"choices":[{"delta":{"content":"a"}}],"error":null}')
    assert chunks[0]["choices"][0]["delta"]["content"] == "a"


class _SteppingClock:
    """A monotonic clock that moves on by one second at every upstream read."""

    def __init__(self):
        self.now = 1000.0
        self.perf_counter = __import__("time").perf_counter

    def monotonic(self):
        return self.now


class _TimedRaw(FakeRaw):
    def __init__(self, pieces, clock):
        super().__init__(pieces)
        self.clock = clock

    def read1(self, amt, decode_content=True):
        self.clock.now += 1.0
        return super().read1(amt, decode_content)


REASONING = b'data: {"choices":[{"delta":{"reasoning_content":"hmm"},"index":0}]}\n\n'


@pytest.mark.parametrize("filler", [
    pytest.param([b'data: {"response":""}\n\n'] * 30, id="empty-response-events"),
    pytest.param([REASONING] * 30, id="reasoning-only"),
    pytest.param([b'data: {"response":"'] + [b"x" * 100] * 30 + [b'"}\n\n'], id="endless-line"),
])
def test_heartbeat_counts_what_the_client_received(monkeypatch, filler):
    """Upstream bytes that give the client nothing do not reset the heartbeat clock: the
    client hears something at least every STREAM_HEARTBEAT (here 3 s of a stepped clock)."""
    from gateway.openai import streaming
    clock = _SteppingClock()
    monkeypatch.setattr(streaming, "time", clock)
    response = FakeResponse([])
    response.raw = _TimedRaw([*filler, CLASSIC], clock)
    heard = []
    for out in relay(response, translator(), heartbeat=3.0, idle_timeout=600, max_duration=600):
        heard.append((clock.now, out))
    times = [when for when, _ in heard]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) <= 4.0, gaps
    raw = b"".join(out for _, out in heard)
    assert raw.count(KEEP_ALIVE) >= 5 or b"hmm" in raw  # a gateway may relay reasoning
    assert events(raw.replace(KEEP_ALIVE, b""))[-1] == "[DONE]"


def test_stream_open_at_shutdown_ends_with_one_server_shutting_down_event():
    """gateway.ops.shutdown planned the end: the relay's next look at its clock ends it."""
    from gateway.ops import shutdown
    from gateway.ops.request_log import RequestStats
    head = CLASSIC[: CLASSIC.index(b'data: {"tool_calls"')]
    response = FakeResponse([head, CLASSIC[len(head):]])
    stats = RequestStats()
    stream = relay(response, translator(), stats=stats)
    try:
        out = next(stream) + next(stream)  # the role chunk, then the first content
        shutdown.begin(0.0)
        out += b"".join(stream)
    finally:
        shutdown.reset()
    chunks = events(out)
    assert chunks[-1]["error"]["code"] == "server_shutting_down" and "[DONE]" not in chunks
    assert len([c for c in chunks if "error" in c]) == 1
    validate_error(chunks[-1])
    assert stats.error == "server_shutting_down" and response.closed


CUT = [b'data: {"response":"a"}\n\ndata: {"response":"b"}\n\n',
       b'data: {"response":"c"}\n\ndata: {"response":"","usage":{"prompt_tokens":9,'
       b'"completion_tokens":61,"total_tokens":70}}\n\ndata: [DONE]\n\n']


@pytest.mark.parametrize("taken, streamed, complete, reported", [
    pytest.param(2, 0, False, None, id="first-content-write-failed"),
    pytest.param(3, 2, False, None, id="second-content-write-failed"),
    pytest.param(4, 3, False, 61, id="last-event-write-failed"),
    pytest.param(None, 3, True, 61, id="read-to-the-end"),
])
def test_stats_count_what_the_client_was_written(taken, streamed, complete, reported):
    """The server takes an item, writes it, then asks for the next; a write that fails
    (the client left) closes the relay at that item, which must not count as relayed."""
    from gateway.ops.request_log import RequestStats
    stats = RequestStats()
    stream = relay(FakeResponse(list(CUT)), translator(), stats=stats)
    items = [next(stream) for _ in range(taken)] if taken else list(stream)
    stream.close()
    assert len(items) == (taken or 4)
    assert stats.streamed_tokens == streamed
    assert stats.stream_complete is complete
    assert stats.completion_tokens == reported, "the log shows what Cloudflare reported"


def test_stream_is_settled_before_the_response_ends():
    """The per-key settlement (stats.when_final) runs once the end went out and before the
    relay finishes (the server sends the chunked end after that), so a client that reads
    the response to its end and sends its next request finds this one counted; once."""
    from gateway.ops.request_log import RequestStats
    stats = RequestStats()
    seen = []
    stats.when_final = lambda: seen.append((stats.completion_tokens, stats.stream_complete))
    stream = relay(FakeResponse([CLASSIC]), translator(), stats=stats)
    pieces = []
    while not pieces or b"[DONE]" not in pieces[-1]:
        pieces.append(next(stream))
    assert seen == [], "not before the end has been written"
    with pytest.raises(StopIteration):
        next(stream)
    assert seen == [(3, True)]
    stats.final()
    assert seen == [(3, True)]


@pytest.mark.parametrize("taken", [1, 2], ids=["start-write-failed", "content-write-failed"])
def test_a_stream_cut_short_is_settled_at_close(taken):
    from gateway.ops.request_log import RequestStats
    stats = RequestStats()
    stats.when_final = lambda: pytest.fail("a cut stream is settled at close, with what was sent")
    stream = relay(FakeResponse(list(CUT)), translator(), stats=stats)
    for _ in range(taken):
        next(stream)
    stream.close()
