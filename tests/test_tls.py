"""The gateway against an HTTPS upstream, as Cloudflare is: JSON, streams, keep-alive, aborts.

The stream relay reads the upstream body straight from its socket, which under TLS is
an SSL socket with its own buffering; these tests run that path end to end.
"""
import shutil
import subprocess

import openai
import pytest
import requests

from tests.fake_workers_ai import FakeWorkersAI
from tests.servers import run_gateway
from tests.sse_client import read_events, text_of

KEY = "sk-tls-client"
MODEL = "@cf/meta/llama-3.1-8b-instruct"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (openssl's command line tool)."""
    openssl = shutil.which("openssl")
    assert openssl, "the openssl command is needed to make a test certificate"
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


@pytest.fixture(scope="module")
def fake(certificate):
    with FakeWorkersAI(accounts={"acct": "tok"}, tls=certificate) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(fake, certificate, tmp_path_factory):
    settings = {"API_KEYS": KEY, "CLOUDFLARE_ACCOUNT_ID": "acct", "CLOUDFLARE_API_TOKEN": "tok",
                "CLOUDFLARE_API_BASE": fake.base_url, "UPSTREAM_CA_BUNDLE": certificate[0],
                "MODELS": MODEL, "STREAM_HEARTBEAT": "0.3", "UPSTREAM_RETRIES": "0"}
    log = tmp_path_factory.mktemp("tls-log") / "gateway.log"
    with run_gateway(settings, log, workers=1) as (base_url, _):
        yield base_url


@pytest.fixture(autouse=True)
def clean(fake):
    fake.reset()


def stream(gateway, content, **kwargs):
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": content}]}
    return requests.post(f"{gateway}/v1/chat/completions", json=body, stream=True, timeout=30,
                         headers={"Authorization": f"Bearer {KEY}"}, **kwargs)


def test_https_upstream_serves_json_and_streams_over_one_connection(fake, gateway):
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0)
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Echo: hi"
    before = fake.connections_total
    for _ in range(3):
        assert text_of(read_events(stream(gateway, "over tls"))) == "Echo: over tls"
    assert fake.connections_total == before  # the TLS connection went back to the pool


def test_https_stream_split_anywhere_and_silent_gets_heartbeats(fake, gateway):
    fake.add_fault("split")
    assert text_of(read_events(stream(gateway, "tiny pieces, ünïcode"))) == \
        "Echo: tiny pieces, ünïcode"
    fake.add_fault("stall", after=2, delay=1.0)
    rv = stream(gateway, "one two three")
    raw = b"".join(rv.iter_content(chunk_size=None))
    assert raw.count(b": keep-alive\n\n") >= 2 and raw.endswith(b"data: [DONE]\n\n")


def test_https_stream_abandoned_by_the_client_is_closed_upstream(fake, gateway):
    rv = stream(gateway, "[[tokens=40]] [[delay=0.05]]")
    next(rv.iter_content(chunk_size=None))
    rv.close()
    assert fake.wait_for(lambda f: f.open_connections == 0, timeout=10)
    assert text_of(read_events(stream(gateway, "still serving"))) == "Echo: still serving"
