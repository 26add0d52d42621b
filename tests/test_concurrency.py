"""Streams do not block each other: 200 concurrent streams through ONE gevent worker.

Each stream is 50 upstream tokens 20 ms apart (about 1 s). A server that serialized
streams would need 200 s; the bound below is generous for a shared, noisy machine
and only a serializing server could miss it.
"""
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.fake_workers_ai import FakeWorkersAI
from tests.servers import run_gateway
from tests.sse_client import read_events, text_of

KEY = "sk-concurrency"
STREAMS = 200
EXPECTED = "".join(f" t{i}" for i in range(50)).lstrip()


def one_stream(base_url, index):
    body = {"model": "@cf/meta/llama-3.1-8b-instruct", "stream": True,
            "messages": [{"role": "user", "content": f"stream {index} [[tokens=50]] [[delay=0.02]]"}]}
    with requests.post(f"{base_url}/v1/chat/completions", json=body, stream=True, timeout=120,
                       headers={"Authorization": f"Bearer {KEY}"}) as rv:
        assert rv.status_code == 200, rv.text
        events = read_events(rv)
    return text_of(events), events[-1]


def test_200_concurrent_streams_through_one_worker(tmp_path):
    with FakeWorkersAI(accounts={"acct": "tok"}) as fake:
        settings = {"API_KEYS": KEY, "CLOUDFLARE_ACCOUNT_ID": "acct", "CLOUDFLARE_API_TOKEN": "tok",
                    "CLOUDFLARE_API_BASE": fake.base_url,
                    "MODELS": "@cf/meta/llama-3.1-8b-instruct"}
        with run_gateway(settings, tmp_path / "gateway.log", workers=1) as (base_url, _):
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=STREAMS) as pool:
                results = list(pool.map(lambda i: one_stream(base_url, i), range(STREAMS)))
            elapsed = time.monotonic() - started
        assert fake.streams_completed == STREAMS
    assert all(text == EXPECTED and last == "[DONE]" for text, last in results)
    assert elapsed < 60, f"{STREAMS} streams took {elapsed:.1f} s: streams are being serialized"
