"""Resilience end to end: real gunicorn + gevent gateway, the fake Workers AI, the OpenAI SDK.

Each test switches a fault on in the fake (per request, or per account for as long as the
test needs) and shows three things: what the client receives, that nothing a healthy
account could have served was lost (the fake's recorded POSTs show which accounts were
tried, and how often), and that no client key or Cloudflare token shows up in any
response or log line (checked after every test, and once more over everything at the end).

Pool state (sidelined accounts) lives in the worker, so tests that sideline an account get
a gateway of their own (`make_gateway`, WEB_CONCURRENCY=1, started in about a second);
tests whose faults never sideline an account share a module-scoped gateway.
"""
import json
import os
import re
import signal
import socket
import threading
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, UTC
from pathlib import Path

import httpx2
import openai
import pytest
import requests

from tests.fake_workers_ai import FakeWorkersAI
from tests.openai_spec import validate_error
from tests.servers import run_gateway
from tests.sse_client import read_events, text_of

KEY = "sk-resil-client-7Qm2Zx9Lw4"
A, B, C, D, E = (f"acct-res-{name}" for name in "abcde")
TOKENS = {A: "cftokA-8Jd3Kq1Vn6Rt", B: "cftokB-2Hs7Pw5Yc0Lm", C: "cftokC-4Fb9Xe3Gu8Zq",
          D: "cftokD-6Tn1Mv4Wa2Kj", E: "cftokE-9Cr5Ly7Bh3Ds"}
WRONG_TOKEN = "cftokX-3Ue8Gi2Oz6Np"  # configured for an account, refused by Cloudflare
SECRETS = [KEY, WRONG_TOKEN, *TOKENS.values()]
CLASSIC = "@cf/meta/llama-3.1-8b-instruct"
SHAPED = "@cf/google/gemma-4-26b-a4b-it"
DEFAULTS = {
    "API_KEYS": KEY, "MODELS": f"{CLASSIC},{SHAPED}", "UPSTREAM_RETRIES": "2",
    "UPSTREAM_CONNECT_TIMEOUT": "1", "UPSTREAM_READ_TIMEOUT": "5", "UPSTREAM_TOTAL_TIMEOUT": "20",
    "STREAM_MAX_DURATION": "30", "STREAM_HEARTBEAT": "15", "GRACEFUL_TIMEOUT": "3",
}

# Everything the tests received (status line, headers and body; bytearrays still filling up
# for SDK streams) and every gateway log, for the secret checks.
SEEN = []
LOGS = []

# --------------------------------------------------------------------------------------------
# Helpers: recording clients, a gateway handle, stray listeners, /proc inspection
# --------------------------------------------------------------------------------------------


class _TeeStream(httpx2.SyncByteStream):
    def __init__(self, inner, sink):
        self.inner, self.sink = inner, sink

    def __iter__(self):
        for chunk in self.inner:
            self.sink.extend(chunk)
            yield chunk

    def close(self):
        self.inner.close()


class TeeTransport(httpx2.HTTPTransport):
    """The SDK's transport, keeping a copy of every response it reads (for the secret checks)."""

    def handle_request(self, request):
        response = super().handle_request(request)
        sink = bytearray(f"HTTP {response.status_code}\n".encode())
        for name, value in response.headers.multi_items():
            sink.extend(f"{name}: {value}\n".encode())
        SEEN.append((f"sdk {request.method} {request.url.path}", sink))
        return httpx2.Response(response.status_code, headers=response.headers,
                               stream=_TeeStream(response.stream, sink),
                               extensions=response.extensions, request=request)


class _Bytes:
    """What `read_events` reads, for a body that was already read."""

    def __init__(self, data):
        self.data = data

    def iter_content(self, chunk_size=None):
        yield self.data


@dataclass
class Reply:
    status: int
    headers: requests.structures.CaseInsensitiveDict
    data: bytes
    elapsed: float

    def json(self):
        return json.loads(self.data)

    def events(self):
        return read_events(_Bytes(self.data))

    @property
    def error(self):
        return self.json()["error"]


class Gateway:
    """A running gateway: raw HTTP (every byte kept) and an OpenAI SDK client."""

    def __init__(self, base_url, process, log_path):
        self.base_url, self.process, self.log_path = base_url, process, log_path
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {KEY}"
        self.client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0,
                                    timeout=30, http_client=httpx2.Client(transport=TeeTransport(),
                                                                          timeout=30))

    def post(self, path, body, headers=None, timeout=30):
        started = time.monotonic()
        with self.session.post(f"{self.base_url}{path}", json=body, headers=headers, stream=True,
                               timeout=timeout) as rv:
            data = b"".join(rv.iter_content(chunk_size=None))
        head = "".join(f"{k}: {v}\n" for k, v in rv.headers.items())
        SEEN.append((f"raw POST {path}", f"HTTP {rv.status_code}\n{head}".encode() + data))
        return Reply(rv.status_code, rv.headers, data, time.monotonic() - started)

    def chat(self, content="hello there", model=CLASSIC, stream=False, **extra):
        body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
        if stream:
            body["stream"] = True
        return self.post("/v1/chat/completions", body)

    def sdk_chat(self, content="hello there", model=CLASSIC):
        completion = self.client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": content}])
        return completion.choices[0].message.content

    def sdk_stream(self, content="hello there", model=CLASSIC):
        chunks = self.client.chat.completions.create(
            model=model, stream=True, messages=[{"role": "user", "content": content}])
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    def close(self):
        self.session.close()
        self.client.close()

    def log_records(self):
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    pass
        return records

    def metric(self, name):
        text = requests.get(f"{self.base_url}/metrics", timeout=5).text
        match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        return float(match.group(1)) if match else None

    @property
    def address(self):
        host, port = self.base_url.rsplit("//", 1)[1].split(":")
        return host, int(port)


def assert_no_secret(label, data):
    """No client key or Cloudflare token, nor any 10-character piece of one, in `data`."""
    data = bytes(data)
    for secret in SECRETS:
        pieces = {secret[i:i + 10] for i in range(len(secret) - 9)}
        leaked = [p for p in pieces if p.encode() in data]
        assert not leaked, f"secret {secret[:6]}... leaked into {label}: {leaked}"


@contextmanager
def gateway(fake, log_path, accounts=(A, B), tokens=None, workers=1, **settings):
    """Run a gateway over `accounts` of the fake (with `tokens` overriding the right ones)."""
    tokens = {**TOKENS, **(tokens or {})}
    env = {**DEFAULTS, "CLOUDFLARE_API_BASE": fake.base_url,
           "CLOUDFLARE_ACCOUNTS": ",".join(f"{a}:{tokens[a]}" for a in accounts)}
    env.update({key: str(value) for key, value in settings.items()})
    LOGS.append(log_path)
    with run_gateway(env, log_path, workers=workers) as (base_url, process):
        handle = Gateway(base_url, process, log_path)
        try:
            yield handle
        finally:  # idle keep-alive connections would hold up gunicorn's graceful stop
            handle.close()
    assert_no_secret(f"gateway log {log_path.name}", log_path.read_bytes())


class Listener:
    """A TCP listener that is not Cloudflare: counts who connects, and hangs up at once.

    With `accept=False` it never accepts and its one-slot backlog is filled, so a further
    connect can only time out (a black hole, for the connect timeout).
    """

    def __init__(self, accept=True):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0 if not accept else 64)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.filler = None
        if accept:
            threading.Thread(target=self._serve, daemon=True).start()
        else:
            self.filler = socket.create_connection(("127.0.0.1", self.port))

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self):
        if self.filler:
            self.filler.close()
        self.sock.close()


TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
              "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


def child_pids(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def tcp_states(pid):
    """TCP state -> number of sockets process `pid` holds (from /proc, like `ss -tanp`)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    states = Counter()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                states[TCP_STATES.get(fields[3], fields[3])] += 1
    return states


def posts(fake):
    """The /ai/run calls the fake received, in order."""
    return [r for r in fake.requests if r.method == "POST"]


def accounts_of(fake):
    return [r.account for r in posts(fake)]


def expect_error_event_end(reply):
    """A stream that broke after its first byte: 200, chunks, then exactly one error event,
    nothing after it (no [DONE]), a cleanly terminated body, no traceback."""
    assert reply.status == 200, reply.data
    events = reply.events()  # fails on an unterminated event or anything unparseable
    errors = [e for e in events if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1, events
    assert events[-1] is errors[0], f"something followed the error event: {events}"
    assert "[DONE]" not in events
    validate_error(errors[0])
    assert isinstance(errors[0]["error"]["message"], str) and errors[0]["error"]["message"]
    for marker in (b"Traceback", b'File "', b"Exception"):
        assert marker not in reply.data, reply.data
    return events, errors[0]["error"]


def expect_sdk_stream_error(call):
    """The OpenAI SDK raises APIError from the error event (not a connection error)."""
    with pytest.raises(openai.APIError) as info:
        call()
    assert not isinstance(info.value, openai.APIConnectionError), repr(info.value)
    assert isinstance(info.value.body, dict) and info.value.body.get("message"), info.value.body
    assert "Traceback" not in str(info.value)
    return info.value


def minutes_to_utc_midnight():
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    return (midnight - now).total_seconds() / 60


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake():
    with FakeWorkersAI(accounts=TOKENS) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(fake):
    """A clean fake per test, and no secret in anything this test received."""
    fake.reset()
    start = len(SEEN)
    yield
    for label, data in SEEN[start:]:
        assert_no_secret(label, data)


@pytest.fixture
def make_gateway(fake, tmp_path):
    """Start a gateway of this test's own: make_gateway(accounts=..., SETTING=value, ...)."""
    with ExitStack() as stack:
        count = iter(range(100))

        def start(**options):
            log_path = tmp_path / f"gateway-{next(count)}.log"
            return stack.enter_context(gateway(fake, log_path, **options))

        yield start


@pytest.fixture(scope="module")
def shared(fake, tmp_path_factory):
    """Pool of two, 2 retries, Retry-After capped at 1.5 s, heartbeats every 0.3 s.

    Only faults that never sideline an account are used with it.
    """
    log_path = tmp_path_factory.mktemp("resilience") / "shared.log"
    with gateway(fake, log_path, accounts=(A, B), UPSTREAM_RETRY_AFTER_CAP="1.5",
                 UPSTREAM_READ_TIMEOUT="3", STREAM_HEARTBEAT="0.3") as gw:
        yield gw


@pytest.fixture(scope="module")
def timeouts(fake, tmp_path_factory):
    """No retries; idle read timeout 1.5 s; non-stream deadline 0.5 s; streams at most 2.5 s."""
    log_path = tmp_path_factory.mktemp("resilience") / "timeouts.log"
    with gateway(fake, log_path, accounts=(A,), UPSTREAM_RETRIES="0", UPSTREAM_READ_TIMEOUT="1.5",
                 UPSTREAM_TOTAL_TIMEOUT="0.5", STREAM_MAX_DURATION="2.5",
                 STREAM_HEARTBEAT="0.3") as gw:
        yield gw


@pytest.fixture(scope="module")
def stray():
    """A host that is not Cloudflare; the gateway must never connect to it."""
    listener = Listener()
    yield listener
    listener.close()


# --------------------------------------------------------------------------------------------
# Retries: 3040, 5xx, 408/3007 and connection errors; never 4xx validation or success:false
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_3040_twice_then_success_is_retried_on_the_next_account(fake, shared, stream):
    fake.add_fault("error", code=3040, times=2)
    reply = shared.chat("retry me", stream=stream)
    assert reply.status == 200, reply.data
    text = text_of(reply.events()) if stream else reply.json()["choices"][0]["message"]["content"]
    assert text == "Echo: retry me"
    tried = accounts_of(fake)
    assert len(tried) == 3, tried  # 1 + UPSTREAM_RETRIES
    assert tried[0] != tried[1] != tried[2], f"a retry stayed on the same account: {tried}"
    fake.add_fault("error", code=3040, times=2)
    assert (shared.sdk_stream("via sdk") if stream else shared.sdk_chat("via sdk")) == \
        "Echo: via sdk"
    assert len(posts(fake)) == 6


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_3040_three_times_gives_429_after_exactly_three_attempts(fake, shared, stream):
    fake.add_fault("error", code=3040, times=3)
    reply = shared.chat("no capacity", stream=stream)
    assert reply.status == 429, reply.data
    validate_error(reply.json())
    assert reply.error["code"] == "rate_limit_exceeded"
    assert len(posts(fake)) == 3
    fake.reset()
    fake.add_fault("error", code=3040, times=3)
    with pytest.raises(openai.RateLimitError) as info:
        shared.sdk_stream("x") if stream else shared.sdk_chat("x")
    assert info.value.code == "rate_limit_exceeded"
    assert len(posts(fake)) == 3
    assert shared.chat("after").status == 200  # the fault is used up; nothing is left over


def test_3040_on_one_account_moves_its_requests_to_the_other(fake, shared):
    fake.add_fault("error", code=3040, account=A, times=None)
    replies = [shared.chat(f"request {i}") for i in range(4)]
    assert [r.status for r in replies] == [200] * 4
    assert [r.json()["choices"][0]["message"]["content"] for r in replies] == \
        [f"Echo: request {i}" for i in range(4)]
    tried = accounts_of(fake)
    # Every attempt on A (out of capacity) was followed by one on B, which served it.
    assert tried.count(B) == 4 and tried.count(A) >= 1, tried
    for i, account in enumerate(tried):
        if account == A:
            assert tried[i + 1] == B, tried


@pytest.mark.parametrize("fault, status, code", [
    pytest.param({"kind": "http500"}, 502, "upstream_error", id="http-500"),
    pytest.param({"kind": "http500", "status": 503}, 502, "upstream_error", id="http-503"),
    pytest.param({"kind": "html"}, 502, "upstream_error", id="html-error-page"),
    pytest.param({"kind": "error", "code": 3007}, 504, "timeout", id="408-3007"),
])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_transient_failures_are_retried_and_served_by_the_next_account(fake, shared, fault,
                                                                       status, code, stream):
    options = dict(fault)
    kind = options.pop("kind")
    fake.add_fault(kind, times=1, **options)
    reply = shared.chat("transient", stream=stream)
    assert reply.status == 200, reply.data
    text = text_of(reply.events()) if stream else reply.json()["choices"][0]["message"]["content"]
    assert text == "Echo: transient"
    tried = accounts_of(fake)
    assert len(tried) == 2 and tried[0] != tried[1], tried
    # The same failure on every attempt: the client gets it after 1 + UPSTREAM_RETRIES tries.
    fake.reset()
    fake.add_fault(kind, times=None, **options)
    reply = shared.chat("persistent", stream=stream)
    assert reply.status == status, reply.data
    validate_error(reply.json())
    assert reply.error["code"] == code
    assert b"<html" not in reply.data.lower() and b"Ray ID" not in reply.data
    assert len(posts(fake)) == 3


@pytest.mark.parametrize("fault, status", [
    pytest.param({"kind": "error", "code": 5006}, 400, id="400-5006-bad-input"),
    pytest.param({"kind": "error", "code": 3006}, 413, id="413-3006-too-large"),
    pytest.param({"kind": "success_false"}, 502, id="success-false-with-200"),
    pytest.param({"kind": "invalid_json"}, 502, id="invalid-json-with-200"),
])
def test_final_answers_are_not_retried(fake, shared, fault, status):
    options = dict(fault)
    fake.add_fault(options.pop("kind"), times=None, **options)
    reply = shared.chat("final")
    assert reply.status == status, reply.data
    validate_error(reply.json())
    assert len(posts(fake)) == 1, accounts_of(fake)
    with pytest.raises(openai.APIStatusError) as info:
        shared.sdk_chat("final")
    assert info.value.status_code == status
    assert len(posts(fake)) == 2


def test_retry_after_is_honoured_up_to_the_cap(fake, shared):
    fake.add_fault("error", code=3040, times=1, headers={"Retry-After": "1"})
    reply = shared.chat("patience")
    assert reply.status == 200 and len(posts(fake)) == 2
    assert reply.elapsed >= 0.9, f"Retry-After: 1 not honoured ({reply.elapsed:.2f} s)"
    fake.reset()
    fake.add_fault("error", code=3040, times=1, headers={"Retry-After": "3600"})
    reply = shared.chat("capped")  # UPSTREAM_RETRY_AFTER_CAP=1.5
    assert reply.status == 200 and len(posts(fake)) == 2
    assert 1.4 <= reply.elapsed < 5, f"Retry-After: 3600 not capped at 1.5 s ({reply.elapsed:.2f} s)"


def test_connection_errors_are_retried_then_502(make_gateway):
    closer = Listener()  # accepts and hangs up: a connection error on every attempt
    try:
        gw = make_gateway(accounts=(A, B), CLOUDFLARE_API_BASE=f"{closer.url}/client/v4")
        for stream in (False, True):
            before = closer.connections
            reply = gw.chat("anyone there?", stream=stream)
            assert reply.status == 502, reply.data
            validate_error(reply.json())
            assert reply.error["code"] == "upstream_unreachable"
            assert closer.connections - before == 3  # 1 + UPSTREAM_RETRIES
            assert str(closer.port) not in reply.data.decode()
        with pytest.raises(openai.InternalServerError):
            gw.sdk_chat()
    finally:
        closer.close()


def test_connect_timeout_answers_504(make_gateway):
    black_hole = Listener(accept=False)
    try:
        gw = make_gateway(accounts=(A,), CLOUDFLARE_API_BASE=f"{black_hole.url}/client/v4",
                          UPSTREAM_CONNECT_TIMEOUT="0.3", UPSTREAM_RETRIES="1")
        for stream in (False, True):
            reply = gw.chat("connect", stream=stream)
            assert reply.status == 504, reply.data
            validate_error(reply.json())
            assert reply.error["code"] == "connect_timeout"
    finally:
        black_hole.close()


# --------------------------------------------------------------------------------------------
# Redirects and the one upstream host
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [302, 307])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_redirect_is_never_followed(fake, shared, stray, status, stream):
    before = stray.connections
    fake.add_fault("redirect", status=status, times=None,
                   location=f"{stray.url}/client/v4/accounts/{A}/ai/run/{CLASSIC}")
    reply = shared.chat("go elsewhere", stream=stream)
    assert reply.status == 502, reply.data
    validate_error(reply.json())
    assert str(stray.port) not in reply.data.decode()
    assert len(posts(fake)) == 1
    time.sleep(0.2)
    assert stray.connections == before, "the gateway followed the redirect"


def test_only_the_configured_host_is_called(fake, shared, stray):
    before = stray.connections
    elsewhere = f"{stray.url}/client/v4"
    body = {"model": CLASSIC, "messages": [{"role": "user", "content": f"see {elsewhere}"}],
            "base_url": elsewhere, "api_base": elsewhere, "url": elsewhere,
            "endpoint": elsewhere, "cloudflare_api_base": elsewhere, "account_id": "../../x",
            "extra_headers": {"Host": f"127.0.0.1:{stray.port}"}, "user": elsewhere}
    headers = {"X-Forwarded-Host": f"127.0.0.1:{stray.port}", "Forwarded": f"host={elsewhere}",
               "X-Original-URL": elsewhere, "X-Rewrite-URL": elsewhere}
    assert shared.post("/v1/chat/completions", body, headers=headers).status == 200
    assert shared.post("/v1/chat/completions", {**body, "stream": True},
                       headers=headers).status == 200
    for model in (f"{elsewhere}/x", f"//127.0.0.1:{stray.port}/x", f"{CLASSIC}/../../../../x"):
        assert shared.post("/v1/chat/completions", {**body, "model": model}).status in (400, 404)
    time.sleep(0.2)
    assert stray.connections == before
    for request in fake.requests:
        assert re.fullmatch(rf"/client/v4/accounts/({A}|{B})/ai/run/{re.escape(CLASSIC)}",
                            request.path), request.path


# --------------------------------------------------------------------------------------------
# The account pool: 3036, refused tokens, round robin
# --------------------------------------------------------------------------------------------


def test_3036_account_is_skipped_and_the_request_moves_on_at_once(fake, make_gateway):
    gw = make_gateway(accounts=(A, B), UPSTREAM_RETRIES="2")
    fake.add_fault("error", code=3036, account=A, times=None)
    replies = [gw.chat(f"quota {i}") for i in range(5)]
    assert [r.status for r in replies] == [200] * 5, [r.data for r in replies]
    tried = accounts_of(fake)
    assert tried.count(A) == 1, f"a used-up account was called again: {tried}"
    assert tried.count(B) == 5
    index = tried.index(A)
    assert tried[index + 1] == B  # the request that met 3036 was served by the next account
    # "At once": moving on after 3036 is not a retry, so no backoff pause was taken.
    assert not [r for r in gw.log_records() if r["message"].startswith("retrying")]
    assert gw.sdk_chat("still fine") == "Echo: still fine"
    assert accounts_of(fake).count(A) == 1


def test_every_account_used_up_gives_429_insufficient_quota(fake, make_gateway):
    gw = make_gateway(accounts=(A, B))
    fake.add_fault("error", code=3036, times=None)
    first = gw.chat("spent")
    assert first.status == 429, first.data
    validate_error(first.json())
    assert first.error["code"] == "insufficient_quota" and first.error["type"] == "insufficient_quota"
    assert first.headers.get("x-should-retry") == "false"
    assert "00:00 UTC" in first.error["message"]
    assert sorted(accounts_of(fake)) == [A, B], "not exactly one POST per account"
    # Later requests: no upstream call at all, and the message says when the allocation resets.
    for stream in (False, True):
        later = gw.chat("still spent", stream=stream)
        assert later.status == 429 and later.error["code"] == "insufficient_quota", later.data
        assert later.headers.get("x-should-retry") == "false"
        match = re.search(r"(\d+) h (\d+) min", later.error["message"])
        assert "00:00 UTC" in later.error["message"] and match, later.error["message"]
        minutes = int(match.group(1)) * 60 + int(match.group(2))
        assert abs(minutes - minutes_to_utc_midnight()) <= 2, later.error["message"]
    assert len(posts(fake)) == 2
    with pytest.raises(openai.RateLimitError) as info:
        gw.sdk_chat()
    assert info.value.code == "insufficient_quota"
    assert info.value.response.headers["x-should-retry"] == "false"
    assert len(posts(fake)) == 2


def test_pool_of_one_used_up_gives_429_insufficient_quota(fake, make_gateway):
    gw = make_gateway(accounts=(A,))
    fake.add_fault("error", code=3036, times=None)
    for stream in (False, True, False):
        reply = gw.chat("spent", stream=stream)
        assert reply.status == 429, reply.data
        assert reply.error["code"] == "insufficient_quota"
        assert reply.headers.get("x-should-retry") == "false"
        assert "00:00 UTC" in reply.error["message"]
    assert accounts_of(fake) == [A], "3036 was retried"


def test_refused_token_sidelines_the_account_for_the_cooldown_and_logs_it(fake, make_gateway):
    gw = make_gateway(accounts=(A, B), tokens={B: WRONG_TOKEN}, ACCOUNT_COOLDOWN="1.5")
    replies = [gw.chat(f"token {i}") for i in range(4)]
    assert [r.status for r in replies] == [200] * 4, [r.data for r in replies]
    tried = accounts_of(fake)
    assert tried.count(B) == 1 and tried.count(A) == 4, tried
    assert tried[tried.index(B) + 1] == A  # moved on to the next account at once
    refused = [r for r in posts(fake) if r.account == B][0]
    assert refused.headers["Authorization"] == f"Bearer {WRONG_TOKEN}"
    operator = [r for r in gw.log_records() if r.get("level") == "error" and B in r["message"]]
    assert operator, "no operator error naming the account whose token was refused"
    # After the cool-down the account is tried again (and sidelined again).
    time.sleep(1.6)
    replies = [gw.chat(f"later {i}") for i in range(3)]
    assert [r.status for r in replies] == [200] * 3
    assert accounts_of(fake).count(B) == 2, accounts_of(fake)


def test_bare_401_and_403_sideline_the_account(fake, make_gateway):
    """Token refusals without code 10000: a bare 401 and a bare 403 (no Cloudflare envelope)."""
    gw = make_gateway(accounts=(A, C, D))
    fake.add_fault("error", account=C, times=None, status=401, body="Unauthorized")
    fake.add_fault("error", account=D, times=None, status=403,
                   body="<html><body>403 Forbidden</body></html>")
    replies = [gw.chat(f"refusal {i}") for i in range(6)]
    assert [r.status for r in replies] == [200] * 6, [r.data for r in replies]
    tried = accounts_of(fake)
    assert tried.count(C) == 1 and tried.count(D) == 1 and tried.count(A) == 6, tried
    for account in (C, D):
        assert any(r.get("level") == "error" and account in r["message"]
                   for r in gw.log_records()), f"no operator error naming {account}"


def test_403_with_a_cloudflare_error_code_sidelines_the_account(fake, make_gateway):
    """A 403 whose envelope carries a code other than 10000 (9109, "Unauthorized to access
    requested resource") is a refused token too: the request moves on, the account sits out."""
    gw = make_gateway(accounts=(A, E))
    fake.add_fault("error", account=E, times=None, code=9109, status=403,
                   message="Unauthorized to access requested resource")
    replies = [gw.chat(f"refusal {i}") for i in range(4)]
    tried = accounts_of(fake)
    assert [r.status for r in replies] == [200] * 4, (tried, [r.data[:160] for r in replies])
    assert tried.count(E) == 1, f"the refused account was called again: {tried}"
    assert any(r.get("level") == "error" and E in r["message"] for r in gw.log_records())


def test_every_token_refused_gives_502_then_503_with_retry_after(fake, make_gateway):
    gw = make_gateway(accounts=(A, B), tokens={A: WRONG_TOKEN, B: WRONG_TOKEN + "2"})
    first = gw.chat("who am i")
    assert first.status == 502, first.data
    assert first.error["code"] == "upstream_auth_error"
    assert sorted(accounts_of(fake)) == [A, B]
    for stream in (False, True):
        later = gw.chat("again", stream=stream)
        assert later.status == 503, later.data
        validate_error(later.json())
        # The default cool-down is 5 minutes.
        assert 240 <= int(later.headers["Retry-After"]) <= 300, later.headers["Retry-After"]
    with pytest.raises(openai.InternalServerError) as info:
        gw.sdk_chat()
    assert info.value.status_code == 503
    assert len(posts(fake)) == 2
    log = gw.log_path.read_text()
    assert A in log and B in log


def test_round_robin_spreads_requests_over_the_healthy_accounts(fake, make_gateway):
    gw = make_gateway(accounts=(A, B, C))
    for i in range(6):
        assert gw.chat(f"spread {i}").status == 200
    tried = accounts_of(fake)
    assert Counter(tried) == {A: 2, B: 2, C: 2}, tried
    assert all(x != y for x, y in zip(tried, tried[1:])), tried
    # B runs out of its allocation: the other two share the load evenly.
    fake.reset()
    fake.add_fault("error", code=3036, account=B, times=None)
    for i in range(12):
        assert gw.chat(f"two left {i}").status == 200
    served = [a for a in accounts_of(fake) if a != B]
    assert accounts_of(fake).count(B) == 1
    last = Counter(served[-8:])
    assert abs(last[A] - last[C]) <= 1, f"not round robin over the healthy accounts: {served}"


# --------------------------------------------------------------------------------------------
# Slow and silent upstreams, timeouts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_slow_first_byte_within_the_read_timeout_is_served(fake, shared, stream):
    fake.add_fault("slow_first_byte", delay=1.0)
    reply = shared.chat("take your time", stream=stream)
    assert reply.status == 200, reply.data
    text = text_of(reply.events()) if stream else reply.json()["choices"][0]["message"]["content"]
    assert text == "Echo: take your time"
    assert len(posts(fake)) == 1


def test_heartbeat_keeps_a_silent_stream_alive(fake, shared):
    content = "one two three four five six"
    fake.add_fault("stall", after=2, delay=1.5)
    reply = shared.chat(content, stream=True)
    assert reply.status == 200
    assert reply.data.count(b"\n: keep-alive\n\n") >= 2, reply.data
    events = reply.events()
    assert events[-1] == "[DONE]" and text_of(events) == f"Echo: {content}"
    fake.add_fault("stall", after=2, delay=1.5)
    assert shared.sdk_stream(content) == f"Echo: {content}"
    assert fake.streams_completed == 2 and len(posts(fake)) == 2


@pytest.mark.parametrize("kind", ["reset", "malformed_event", "error_event"])
@pytest.mark.parametrize("model", [CLASSIC, SHAPED], ids=["classic", "openai-shaped"])
def test_mid_stream_failure_is_one_error_event(fake, shared, kind, model):
    content = "alpha beta gamma delta epsilon zeta"
    fake.add_fault(kind, after=3)
    events, _ = expect_error_event_end(shared.chat(content, model=model, stream=True))
    assert text_of(events) and f"Echo: {content}".startswith(text_of(events))
    assert len(posts(fake)) == 1, "retried after the first byte went out"
    fake.add_fault(kind, after=3)
    expect_sdk_stream_error(lambda: shared.sdk_stream(content, model=model))
    assert len(posts(fake)) == 2


def test_total_deadline_bounds_a_non_stream_request(fake, timeouts):
    # 1 s to the first byte is within the 1.5 s idle read timeout, not within the 0.5 s deadline.
    fake.add_fault("slow_first_byte", delay=1.0)
    reply = timeouts.chat("deadline")
    assert reply.status == 504, reply.data
    validate_error(reply.json())
    assert reply.error["code"] == "timeout"
    fake.add_fault("slow_first_byte", delay=1.0)
    with pytest.raises(openai.APIStatusError) as info:
        timeouts.sdk_chat("deadline")
    assert info.value.status_code == 504
    # The deadline is for non-stream requests: the same wait on a stream is fine.
    fake.add_fault("slow_first_byte", delay=1.0)
    reply = timeouts.chat("stream deadline", stream=True)
    assert reply.status == 200 and text_of(reply.events()) == "Echo: stream deadline"
    fake.add_fault("slow_first_byte", delay=0.2)
    assert timeouts.chat("quick").status == 200


def test_read_timeout_before_the_first_byte_of_a_stream_is_504(fake, timeouts):
    fake.add_fault("slow_first_byte", delay=4)
    reply = timeouts.chat("silence", stream=True)
    assert reply.status == 504, reply.data
    validate_error(reply.json())
    assert reply.error["code"] == "timeout"
    fake.add_fault("slow_first_byte", delay=4)
    with pytest.raises(openai.APIStatusError) as info:
        timeouts.sdk_stream("silence")
    assert info.value.status_code == 504
    assert len(posts(fake)) == 2


def test_read_timeout_mid_stream_is_an_error_event(fake, timeouts):
    # A 2.2 s stall: past the 1.5 s idle read timeout, yet short enough that the stream would
    # end normally before STREAM_MAX_DURATION (2.5 s) if the idle timeout did not cut it.
    fake.add_fault("stall", after=3, delay=2.2)
    reply = timeouts.chat("one two three four five", stream=True)
    events, error = expect_error_event_end(reply)
    assert error["code"] == "timeout", error
    assert b": keep-alive" in reply.data  # heartbeats while waiting
    fake.add_fault("stall", after=3, delay=2.2)
    expect_sdk_stream_error(lambda: timeouts.sdk_stream("one two three four five"))
    assert len(posts(fake)) == 2


def test_stream_max_duration_ends_with_an_error_event(fake, timeouts):
    content = "[[tokens=40]] [[delay=0.1]]"  # 4 s of steady tokens; the cap is 2.5 s
    events, error = expect_error_event_end(timeouts.chat(content, stream=True))
    assert error["code"] == "timeout", error
    assert text_of(events).startswith("t0 t1")
    expect_sdk_stream_error(lambda: timeouts.sdk_stream(content))
    # >= : a stall from an earlier test may still be noticed as aborted by the fake meanwhile
    assert fake.wait_for(lambda f: f.streams_aborted >= 2, timeout=5)
    assert fake.streams_completed == 0


# --------------------------------------------------------------------------------------------
# Clients that leave, and shutting down
# --------------------------------------------------------------------------------------------


def open_stream(gw, content, model=CLASSIC):
    """A raw socket with a stream request sent on it."""
    body = json.dumps({"model": model, "stream": True,
                       "messages": [{"role": "user", "content": content}]}).encode()
    host, port = gw.address
    sock = socket.create_connection((host, port), timeout=15)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n"
                 b"Host: %s:%d\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (host.encode(), port, KEY.encode(), len(body), body))
    return sock


def read_some_events(sock, count=2):
    """Read until `count` SSE events came in (the role chunk, then content)."""
    data = b""
    while data.count(b"data: ") < count:
        piece = sock.recv(65536)
        assert piece, f"the gateway closed the stream early: {data!r}"
        data += piece
    SEEN.append(("raw abandoned stream", data))
    assert data.startswith(b"HTTP/1.1 200"), data
    return data


def test_abandoned_streams_close_their_upstream_and_leave_no_socket_behind(fake, make_gateway):
    gw = make_gateway(accounts=(A, B), UPSTREAM_READ_TIMEOUT="60", STREAM_HEARTBEAT="15")
    workers = child_pids(gw.process.pid)
    assert len(workers) == 1
    baseline = fake.open_connections
    # Half the streams flow steadily; the other half go silent upstream after 3 events, so
    # only the gateway's own watch on the client can notice it left.
    fake.add_fault("stall", model=SHAPED, after=3, delay=60, times=None)

    # One silent stream: the client leaves, and within about a second upstream is closed.
    sock = open_stream(gw, "silent", model=SHAPED)
    read_some_events(sock)
    sock.close()
    left = time.monotonic()
    assert fake.wait_for(lambda f: f.streams_aborted == 1, timeout=10)
    assert time.monotonic() - left < 5, "upstream was not closed promptly after the client left"

    # 200 streams abandoned mid-way.
    socks = [open_stream(gw, f"abandon {i} [[tokens=400]] [[delay=0.05]]",
                         model=SHAPED if i % 2 else CLASSIC) for i in range(200)]
    for sock in socks:
        read_some_events(sock)
    for sock in socks:
        sock.close()
    closed = fake.wait_for(lambda f: f.streams_aborted >= 201 and f.open_connections == baseline,
                           timeout=30)
    assert closed, (f"aborted {fake.streams_aborted}/201, open upstream connections "
                    f"{fake.open_connections} (baseline {baseline})")
    assert fake.streams_started == 201 and fake.streams_completed == 0
    # Every relay ended (the open-streams gauge is decremented in its `finally`).
    assert gw.metric("gateway_open_streams") == 0
    # No socket of the worker is left in CLOSE_WAIT (or open at all, beyond the listener).
    deadline = time.monotonic() + 5
    while True:
        states = tcp_states(workers[0])
        if (states["CLOSE_WAIT"] == 0 and states["ESTABLISHED"] <= 2) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert states["CLOSE_WAIT"] == 0, states
    assert states["ESTABLISHED"] <= 2, states
    # And the gateway still serves.
    assert gw.sdk_stream("after the crowd left") == "Echo: after the crowd left"


def test_sigterm_lets_open_streams_finish_then_exits(fake, make_gateway):
    gw = make_gateway(accounts=(A,), GRACEFUL_TIMEOUT="15")
    result = {}

    def consume():
        result["reply"] = gw.chat("[[tokens=16]] [[delay=0.25]]", stream=True)
        # Done with the gateway: hang up (an idle keep-alive connection would otherwise
        # keep the worker up to KEEPALIVE seconds longer, still within the graceful timeout).
        gw.session.close()

    reader = threading.Thread(target=consume)
    reader.start()
    assert fake.wait_for(lambda f: f.streams_started == 1, timeout=10)
    gw.process.send_signal(signal.SIGTERM)
    refused = False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(gw.address, timeout=1).close()
        except ConnectionRefusedError:
            refused = True
            break
        except OSError:
            pass
        time.sleep(0.1)
    assert refused, "the gateway still accepted connections after SIGTERM"
    assert gw.process.poll() is None  # still up, serving the open stream
    reader.join(timeout=30)
    assert not reader.is_alive()
    events = result["reply"].events()
    assert events[-1] == "[DONE]", events
    assert text_of(events) == " ".join(f"t{i}" for i in range(16))
    assert gw.process.wait(timeout=30) == 0
    assert fake.streams_completed == 1 and fake.streams_aborted == 0
    assert "graceful timeout" not in gw.log_path.read_text().lower()


def test_silent_stream_survives_in_a_worker_holding_over_1024_sockets(fake, make_gateway):
    """A busy worker (a thousand open client connections, as the contract's scale implies):
    a stream whose upstream goes silent still gets heartbeats and its full text.

    1100 idle keep-alive connections push the stream's client socket past descriptor 1023,
    where select() cannot go; the liveness check while upstream is silent must not take
    that for a client that left.
    """
    gw = make_gateway(accounts=(A,), STREAM_HEARTBEAT="0.3", KEEPALIVE="60")
    idle = [socket.create_connection(gw.address, timeout=10) for _ in range(1100)]
    try:
        worker = child_pids(gw.process.pid)[0]
        deadline = time.monotonic() + 10
        while len(os.listdir(f"/proc/{worker}/fd")) < 1100 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(os.listdir(f"/proc/{worker}/fd")) >= 1100
        content = "one two three four five six"
        fake.add_fault("stall", after=2, delay=1.5)
        reply = gw.chat(content, stream=True)
        events = reply.events()
        assert events[-1] == "[DONE]" and text_of(events) == f"Echo: {content}", \
            f"stream cut short: text {text_of(events)!r}, " \
            f"{reply.data.count(b': keep-alive')} keep-alives, ends with {reply.data[-160:]!r}"
        assert b": keep-alive" in reply.data
    finally:
        for sock in idle:
            sock.close()


# --------------------------------------------------------------------------------------------
# Secrets, once more over everything
# --------------------------------------------------------------------------------------------


def test_no_key_or_token_in_any_response_or_log_line():
    """Sweep of every body and header the tests received and every gateway log so far."""
    assert SEEN and LOGS
    for label, data in SEEN:
        assert_no_secret(label, data)
    for path in LOGS:
        if path.exists():
            assert_no_secret(str(path), path.read_bytes())

