"""Behind nginx, for real: Debian's nginx running `deploy/nginx.conf`, in front of the real
gunicorn + gevent gateway and the fake Workers AI server, driven by the official OpenAI SDK.

nginx is installed from Debian's registry when missing (tests/nginx.py), and the test fails,
never skips, when that is impossible. The site config is used as shipped with test ports and,
so that the stream tests take seconds, proxy_read_timeout 2 s against a gateway heartbeat of
0.5 s and an upstream that goes silent for 4 s.
"""
import configparser
import json
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from types import SimpleNamespace

import httpx2 as httpx  # the HTTP library of openai 3.x (httpx's successor)
import openai
import pytest
import requests

from tests import nginx as ngx
from tests.fake_workers_ai import FakeWorkersAI
from tests.openai_spec import validate_error
from tests.servers import ROOT, free_port, run_gateway

KEY = "sk-nginx-client-key-0123456789"
TOKEN = "cf-nginx-token-abcdef987654"
ACCOUNT = "acct-nginx-1"
MODEL = "@cf/meta/llama-3.1-8b-instruct"
MiB = 1024 * 1024
READ_TIMEOUT = 2      # nginx proxy_read_timeout in the rendered test config, seconds
HEARTBEAT = 0.5       # the gateway's STREAM_HEARTBEAT behind it
SILENCE = 4.0         # a stall of the fake upstream, longer than READ_TIMEOUT
CLIENT_IP = "127.0.0.2"
SPOOFED = "6.6.6.6"
UNIT = ROOT / "deploy" / "cf-ai-endpoint.service"


@pytest.fixture(scope="module")
def nginx_bin():
    return ngx.ensure_nginx()


@pytest.fixture(scope="module")
def fake():
    with FakeWorkersAI(accounts={ACCOUNT: TOKEN}) as server:
        yield server


@pytest.fixture(autouse=True)
def clean_fake(fake):
    fake.reset()
    yield


@contextmanager
def stack(nginx_bin, fake, folder, settings):
    """The gateway with `settings` (plus the test account) and nginx in front of it."""
    settings = {"API_KEYS": KEY, "CLOUDFLARE_ACCOUNT_ID": ACCOUNT, "CLOUDFLARE_API_TOKEN": TOKEN,
                "CLOUDFLARE_API_BASE": fake.base_url, "UPSTREAM_RETRIES": "0",
                "ACCOUNT_COOLDOWN": "0", "LOG_FORMAT": "json", **settings}
    log_path = folder / "gateway.log"
    with run_gateway(settings, log_path) as (gateway_url, _):
        port = int(gateway_url.rsplit(":", 1)[1])
        with ngx.run_nginx(nginx_bin, folder / "nginx", port,
                           read_timeout=READ_TIMEOUT) as (url, nginx_dir):
            yield SimpleNamespace(url=url, gateway_url=gateway_url, log=log_path,
                                  nginx_dir=nginx_dir)


@pytest.fixture(scope="module")
def proxied(nginx_bin, fake, tmp_path_factory):
    """Production settings behind nginx: one trusted hop, and a short heartbeat."""
    with stack(nginx_bin, fake, tmp_path_factory.mktemp("proxied"),
               {"PROXY_HOPS": "1", "FORWARDED_ALLOW_IPS": "127.0.0.1",
                "STREAM_HEARTBEAT": str(HEARTBEAT)}) as env:
        yield env
    log = env.log.read_text(errors="replace")
    assert KEY not in log and TOKEN not in log, "a secret reached the gateway log"
    assert "Traceback" not in log and "MonkeyPatchWarning" not in log, log


@pytest.fixture(scope="module")
def plain(nginx_bin, fake, tmp_path_factory):
    """The gateway's defaults behind the same nginx: no trusted hop, 15 s heartbeat."""
    with stack(nginx_bin, fake, tmp_path_factory.mktemp("plain"), {}) as env:
        yield env


def sdk(env, **options):
    """The OpenAI SDK pointed at nginx (no retries, so every call is one request)."""
    return openai.OpenAI(base_url=f"{env.url}/v1", api_key=KEY, max_retries=0, timeout=30,
                         **options)


def log_records(env, request_id, timeout=5.0):
    """The gateway's JSON request-log lines for `request_id` (waits for the first)."""
    deadline = time.monotonic() + timeout
    while True:
        records = []
        for line in env.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("message") == "request" and record.get("request_id") == request_id:
                    records.append(record)
        if records or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def nginx_error_log(env):
    return (env.nginx_dir / "error.log").read_text(errors="replace")


def ask(text):
    return [{"role": "user", "content": text}]


# ------------------------------------------------------------------------------------------
# The files as shipped
# ------------------------------------------------------------------------------------------

def directive(text, name):
    """Every value of a directive in an nginx config (comments ignored)."""
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    return [value.strip() for value in re.findall(rf"(?:^|[;{{}}\s]){name}\s+([^;]*);", code)]


def seconds(value):
    match = re.fullmatch(r"(\d+)(ms|s|m)?", value)
    number, unit = int(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "m": 60}[unit]


def test_shipped_site_config_is_valid_nginx(nginx_bin, tmp_path):
    """deploy/nginx.conf unmodified (port 80, upstream :8000) passes `nginx -t`."""
    text = ngx.SITE.read_text()
    conf = ngx.write_config(tmp_path, text, nginx_bin)
    ok, output = ngx.check_config(nginx_bin, tmp_path, conf)
    assert ok, output
    assert not re.search(r"^\s*(events|http)\s*{", text, re.M), "a site config, not a main one"


def test_shipped_site_config_has_the_production_settings():
    text = ngx.SITE.read_text()
    upstream = re.search(r"upstream\s+(\w+)\s*{([^}]*)}", text)
    assert upstream and directive(upstream.group(2), "server") == ["127.0.0.1:8000"]
    assert int(directive(upstream.group(2), "keepalive")[0]) > 0
    # gunicorn's KEEPALIVE default is 5 s: nginx must drop idle connections first.
    assert seconds(directive(upstream.group(2), "keepalive_timeout")[0]) < 5
    # `location /`, and the audio uploads' location inside it
    assert directive(text, "proxy_pass") == [f"http://{upstream.group(1)}"] * 2
    assert directive(text, "proxy_http_version") == ["1.1"]
    assert directive(text, "proxy_buffering") == ["off"]
    assert directive(text, "proxy_request_buffering") == ["off"]
    assert directive(text, "gzip") == ["off"]
    assert directive(text, "proxy_intercept_errors") in ([], ["off"])
    headers = {h.split(None, 1)[0].lower(): h.split(None, 1)[1]
               for h in directive(text, "proxy_set_header")}
    assert headers["connection"] == '""' and headers["host"] == "$host"
    assert headers["x-forwarded-for"] == "$proxy_add_x_forwarded_for"
    assert headers["x-forwarded-proto"] == "$scheme" and headers["x-real-ip"] == "$remote_addr"
    # Well above the gateway's heartbeat (15 s) and its non-stream deadline (300 s).
    assert seconds(directive(text, "proxy_read_timeout")[0]) >= 600
    limit, audio_limit = directive(text, "client_max_body_size")
    assert int(limit.rstrip("m")) * MiB > MiB and limit.endswith("m")
    assert int(audio_limit.rstrip("m")) * MiB > 25 * MiB  # AUDIO_MAX_BYTES
    assert directive(text, "listen") == ["80"]


# ------------------------------------------------------------------------------------------
# Streaming through nginx
# ------------------------------------------------------------------------------------------

def test_stream_chunks_arrive_as_the_upstream_produces_them(proxied, fake):
    """20 tokens 0.2 s apart: the first reaches the SDK while the fake is still generating."""
    started = time.monotonic()
    arrivals, texts, completed_at_first = [], [], None
    stream = sdk(proxied).chat.completions.create(
        model=MODEL, stream=True, messages=ask("[[tokens=20]] [[delay=0.2]]"))
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if not arrivals:
                completed_at_first = fake.streams_completed
            arrivals.append(time.monotonic() - started)
            texts.append(chunk.choices[0].delta.content)
    assert "".join(texts) == " ".join(f"t{i}" for i in range(20))
    assert completed_at_first == 0, "the first chunk came only after the upstream finished"
    assert fake.streams_completed == 1
    assert arrivals[0] < 1.5, arrivals  # the fake needs 20 x 0.2 s = 4 s for the whole reply
    assert arrivals[-1] - arrivals[0] > 2.5, arrivals  # spread out, not released in one go
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    assert sum(gap > 0.1 for gap in gaps) >= 15, arrivals  # one by one, not in batches


def test_silent_upstream_does_not_get_the_stream_cut(proxied, fake):
    """Upstream silent for 4 s, nginx read timeout 2 s: heartbeats (0.5 s) keep it open."""
    fake.add_fault("stall", after=2, delay=SILENCE)
    started = time.monotonic()
    stream = sdk(proxied).chat.completions.create(model=MODEL, stream=True,
                                                  messages=ask("[[tokens=6]]"))
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "t0 t1 t2 t3 t4 t5"
    assert time.monotonic() - started >= SILENCE - 0.5  # the stall really happened
    assert fake.streams_completed == 1
    assert "timed out" not in nginx_error_log(proxied)


def test_heartbeat_comments_cross_nginx(proxied, fake):
    """The raw bytes of the same stall: `: keep-alive` comments reach the client."""
    fake.add_fault("stall", after=2, delay=2.0)
    rv = requests.post(f"{proxied.url}/v1/chat/completions", stream=True, timeout=30,
                       headers={"Authorization": f"Bearer {KEY}"},
                       json={"model": MODEL, "stream": True, "messages": ask("[[tokens=4]]")})
    body = b"".join(rv.iter_content(chunk_size=None))
    assert rv.status_code == 200 and rv.headers["Content-Type"].startswith("text/event-stream")
    assert body.count(b": keep-alive\n\n") >= 2 and body.endswith(b"data: [DONE]\n\n")
    assert "Content-Encoding" not in rv.headers


def test_without_heartbeats_nginx_does_cut_a_silent_stream(plain, fake):
    """Control: the same stall with the default 15 s heartbeat is cut at the 2 s read timeout,
    so the test above proves the heartbeat, not a lenient timeout."""
    fake.add_fault("stall", after=2, delay=SILENCE)
    stream = sdk(plain).chat.completions.create(model=MODEL, stream=True,
                                                messages=ask("[[tokens=6]]"))
    with pytest.raises((httpx.HTTPError, openai.APIError)):
        for _ in stream:
            pass
    assert "upstream timed out" in nginx_error_log(plain)


# ------------------------------------------------------------------------------------------
# The client's address through exactly one trusted hop
# ------------------------------------------------------------------------------------------

def sdk_from(env, source_ip, url=None):
    """The SDK connecting from `source_ip`, with a forged X-Forwarded-For."""
    http_client = openai.DefaultHttpxClient(
        transport=httpx.HTTPTransport(local_address=source_ip))
    return openai.OpenAI(base_url=f"{url or env.url}/v1", api_key=KEY, max_retries=0,
                         timeout=30, http_client=http_client,
                         default_headers={"X-Forwarded-For": SPOOFED})


def served_client(env, url=None):
    """Ask once from 127.0.0.2 with a forged X-Forwarded-For; the log's `client` field."""
    raw = sdk_from(env, CLIENT_IP, url).chat.completions.with_raw_response.create(
        model=MODEL, messages=ask("who am I"))
    assert raw.parse().choices[0].message.content == "Echo: who am I"
    (record,) = log_records(env, raw.headers["X-Request-ID"])
    assert record["status"] == 200
    return record["client"], raw.headers["X-Request-ID"]


def test_client_address_reaches_the_log_through_one_trusted_hop(proxied):
    client, request_id = served_client(proxied)
    assert client == CLIENT_IP, f"logged {client!r}; {SPOOFED} is forged, 127.0.0.1 is nginx"
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)  # nginx's $request_id, kept by the gateway


def test_a_client_bypassing_nginx_cannot_forge_its_address(proxied):
    """Straight to gunicorn from 127.0.0.2 (not a trusted proxy): X-Forwarded-For is ignored."""
    client, _ = served_client(proxied, url=proxied.gateway_url)
    assert client == CLIENT_IP


def test_without_proxy_hops_the_log_shows_nginx(plain):
    client, _ = served_client(plain)
    assert client == "127.0.0.1"


def test_client_request_id_passes_through_nginx(proxied):
    rv = requests.get(f"{proxied.url}/v1/models", timeout=10,
                      headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": "trace-42"})
    assert rv.status_code == 200 and rv.headers["X-Request-ID"] == "trace-42"
    assert log_records(proxied, "trace-42")


@pytest.mark.parametrize("path", ["/metrics", "/metrics/", "//metrics", "/metrics?format=x",
                                  "/%6detrics"])
def test_nginx_does_not_expose_metrics(proxied, path):
    """Behind nginx every request comes from loopback, which METRICS_ALLOW_IPS trusts."""
    rv = requests.get(f"{proxied.url}{path}", timeout=10)
    assert rv.status_code == 404, rv.text
    validate_error(rv.json())
    assert "gateway_" not in rv.text
    assert requests.get(f"{proxied.gateway_url}/metrics", timeout=10).status_code == 200


# ------------------------------------------------------------------------------------------
# Body limits: the gateway's JSON 413, and nginx's own limit answering JSON too
# ------------------------------------------------------------------------------------------

def big_messages(size):
    return ask("x" * size)


def assert_openai_413(response):
    assert response.status_code == 413
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    validate_error(body)
    assert body["error"]["code"] == "request_too_large"
    return body


def test_body_over_the_gateway_limit_gets_the_gateway_json_413(proxied):
    """1.5 MiB: under nginx's 2m, over the gateway's 1 MiB; the SDK sees the gateway's 413."""
    with pytest.raises(openai.APIStatusError) as info:
        sdk(proxied).chat.completions.create(model=MODEL, messages=big_messages(3 * MiB // 2))
    assert info.value.status_code == 413 and info.value.code == "request_too_large"
    assert_openai_413(info.value.response)
    (record,) = log_records(proxied, info.value.response.headers["X-Request-ID"])
    assert record["status"] == 413 and record["path"] == "/v1/chat/completions"


def test_chunked_body_over_the_gateway_limit_gets_the_gateway_json_413(proxied):
    """Without Content-Length (unbuffered by nginx, so gunicorn sees it chunked): still 413."""
    payload = json.dumps({"model": MODEL, "messages": big_messages(3 * MiB // 2)}).encode()
    pieces = (payload[i:i + 65536] for i in range(0, len(payload), 65536))
    rv = requests.post(f"{proxied.url}/v1/chat/completions", data=pieces, timeout=30,
                       headers={"Authorization": f"Bearer {KEY}",
                                "Content-Type": "application/json"})
    assert_openai_413(rv)
    (record,) = log_records(proxied, rv.headers["X-Request-ID"])
    assert record["status"] == 413


def test_audio_upload_over_the_json_limits_passes_through_nginx(proxied):
    """3 MiB of audio: over nginx's 2m for JSON routes, under the audio routes' own limit."""
    audio = b"RIFF" + bytes(3 * MiB)
    result = sdk(proxied).audio.transcriptions.create(model="@cf/deepgram/nova-3",
                                                      file=("long.wav", audio, "audio/wav"))
    assert result.text == f"Heard {len(audio)} bytes."


def test_body_over_the_nginx_limit_gets_json_from_nginx(proxied):
    """3 MiB, over nginx's own 2m: nginx answers, in OpenAI's envelope, not an HTML page."""
    with pytest.raises(openai.APIStatusError) as info:
        sdk(proxied).chat.completions.create(model=MODEL, messages=big_messages(3 * MiB))
    assert info.value.status_code == 413 and info.value.code == "request_too_large"
    body = assert_openai_413(info.value.response)
    request_id = info.value.response.headers["X-Request-ID"]
    assert request_id in body["error"]["message"]
    assert not log_records(proxied, request_id, timeout=0.5), "the gateway saw the body"
    assert "client intended to send too large body" in nginx_error_log(proxied)


def test_chunked_body_over_the_nginx_limit_is_refused(proxied):
    payload = json.dumps({"model": MODEL, "messages": big_messages(3 * MiB)}).encode()
    pieces = (payload[i:i + 65536] for i in range(0, len(payload), 65536))
    rv = requests.post(f"{proxied.url}/v1/chat/completions", data=pieces, timeout=30,
                       headers={"Authorization": f"Bearer {KEY}",
                                "Content-Type": "application/json"})
    assert_openai_413(rv)


# ------------------------------------------------------------------------------------------
# Other errors
# ------------------------------------------------------------------------------------------

def test_gateway_errors_pass_through_nginx_unchanged(proxied, fake):
    fake.add_fault("http500")
    with pytest.raises(openai.InternalServerError) as info:
        sdk(proxied).chat.completions.create(model=MODEL, messages=ask("x"))
    assert info.value.status_code == 502 and info.value.code == "upstream_error"
    request_id = info.value.response.headers["X-Request-ID"]
    assert log_records(proxied, request_id)[0]["status"] == 502  # the gateway's, not nginx's


def test_nginx_read_timeout_gives_json_504_from_nginx(proxied, fake):
    """Silence before the gateway's headers, past proxy_read_timeout (2 s here): nginx's 504 is
    OpenAI JSON too. (In production the timeout, 600 s, is above anything the gateway waits.)"""
    fake.add_fault("slow_first_byte", delay=READ_TIMEOUT + 1.5)
    with pytest.raises(openai.InternalServerError) as info:
        sdk(proxied).chat.completions.create(model=MODEL, messages=ask("x"))
    assert info.value.status_code == 504 and info.value.code == "timeout"
    assert info.value.response.headers["Content-Type"].startswith("application/json")
    validate_error(info.value.response.json())
    assert "upstream timed out" in nginx_error_log(proxied)
    # The gateway got the same request id, and finishes the abandoned request on its own.
    assert log_records(proxied, info.value.response.headers["X-Request-ID"], timeout=10)


def test_gateway_down_gives_json_502_from_nginx(nginx_bin, tmp_path):
    with ngx.run_nginx(nginx_bin, tmp_path, upstream_port=free_port()) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=10)
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model=MODEL, messages=ask("x"))
    assert info.value.status_code == 502 and info.value.code == "upstream_error"
    assert info.value.response.headers["Content-Type"].startswith("application/json")
    validate_error(info.value.response.json())


# ------------------------------------------------------------------------------------------
# The systemd unit
# ------------------------------------------------------------------------------------------

def read_unit():
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str
    parser.read_string(UNIT.read_text())
    return parser


def unit_values(key):
    """Every value of `key` in [Service] (configparser keeps only the last of repeats)."""
    return [line.split("=", 1)[1].strip() for line in UNIT.read_text().splitlines()
            if line.strip().startswith(f"{key}=")]


def test_systemd_unit_runs_gunicorn_from_the_venv_behind_nginx():
    service = read_unit()["Service"]
    exec_start = service["ExecStart"].split()
    workdir = service["WorkingDirectory"]
    assert exec_start[0] == f"{workdir}/.venv/bin/gunicorn"
    assert exec_start[1:] == ["-c", "gunicorn.conf.py", "app:app"]
    assert service["EnvironmentFile"].lstrip("-")
    assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "on-failure"
    assert service["User"] not in ("", "root", "0")
    environment = dict(item.split("=", 1) for value in unit_values("Environment")
                       for item in value.split())
    assert environment["PROXY_HOPS"] == "1" and environment["FORWARDED_ALLOW_IPS"] == "127.0.0.1"
    assert environment["HOST"] == "127.0.0.1"  # only nginx can reach it
    graceful = int(environment.get("GRACEFUL_TIMEOUT", "30"))
    assert int(service["TimeoutStopSec"].rstrip("s")) > graceful


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # Point it at this checkout so the ExecStart binary exists; everything else as shipped.
    workdir = read_unit()["Service"]["WorkingDirectory"]
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(workdir, str(ROOT)))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines()
                if UNIT.name in line or "cf-ai-endpoint" in line]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr
