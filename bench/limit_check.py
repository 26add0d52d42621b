"""Micro-benchmark: what the per-key check costs a request, on each state store.

Runs the gateway's own `before_request` hooks (key check, then model and limits) in a
request context, for a stored key with every limit set too high to trip and, for
comparison, for an API_KEYS key; each admitted request is settled as it would be when
its response ends (not timed). Also times the store's `admit` alone, and counts the
commands sent to Redis per check (the issue's goal: one round trip).

    python bench/limit_check.py                               # SQLite (a temp file)
    python bench/limit_check.py --redis redis://127.0.0.1:6379/15   # and Redis (FLUSHDB'd!)
"""
import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import Config  # noqa: E402
from gateway import auth, create_app  # noqa: E402
from gateway.ops.request_log import start_request  # noqa: E402
from gateway.state import guard  # noqa: E402
from gateway.state.keys import create_key  # noqa: E402
from gateway.state.store import Limits, Ticket  # noqa: E402

ENV_KEY = "bench-env-key"
MODEL = "@cf/meta/llama-3.1-8b-instruct"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hello " * 20}],
        "max_tokens": 64}
HIGH = {"rpm": 10**9, "tpm": 10**12, "max_parallel": 10**6, "daily_tokens": 10**15}


def percentile(values, q):
    values = sorted(values)
    return values[int(q * (len(values) - 1))]


def count_commands(store):
    """A counter of the commands the Redis client sends (one per round trip here)."""
    sent = [0]
    connection = store.redis.connection_pool.get_connection()
    store.redis.connection_pool.release(connection)
    cls = type(connection)
    original = cls.send_packed_command

    def counting(self, command, check_health=True):
        sent[0] += 1
        return original(self, command, check_health)
    cls.send_packed_command = counting
    return sent


def measure(url, count):
    class BenchConfig(Config):
        STATE_URL = url
        API_KEYS = [ENV_KEY]
        MODELS = [MODEL]
        LOG_LEVEL = "warning"

    app = create_app(BenchConfig)
    store = app.extensions["state"]
    if hasattr(store, "redis"):
        store.redis.flushdb()
    secret, record = create_key(store, {"name": f"bench-{uuid.uuid4().hex[:6]}", **HIGH})
    sent = count_commands(store) if hasattr(store, "redis") else None
    admit, stored, env, trips = [], [], [], []
    for _ in range(count):
        ticket = Ticket(record["hash"], record["name"], Limits(**HIGH), 100, time.time(),
                        uuid.uuid4().hex)
        started = time.perf_counter()
        store.admit(ticket)
        admit.append(time.perf_counter() - started)
        store.settle(ticket, 30, 64, MODEL)
    for _ in range(count):
        for key, times in ((secret, stored), (ENV_KEY, env)):
            with app.test_request_context("/v1/chat/completions", method="POST", json=BODY,
                                          headers={"Authorization": f"Bearer {key}"}):
                from flask import g
                start_request()
                before = sent[0] if sent else 0
                started = time.perf_counter()
                auth.require_key()
                guard.limit_request()
                times.append(time.perf_counter() - started)
                if sent and key == secret:
                    trips.append(sent[0] - before)
                if g.get("ticket") is not None:
                    store.settle(g.ticket, 30, 64, MODEL)
    store.close()
    ms = 1000
    line = (f"admit alone p50 {percentile(admit, .5) * ms:.3f} ms | key check + model + limits: "
            f"p50 {percentile(stored, .5) * ms:.3f} ms, p99 {percentile(stored, .99) * ms:.3f} ms"
            f" | API_KEYS key p50 {percentile(env, .5) * ms:.3f} ms")
    if trips:
        line += f" | Redis round trips per check: median {statistics.median(trips[1:]):.0f}"
    return line


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--redis", help="also measure on this Redis database (it is emptied)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print("sqlite:", measure(f"sqlite:///{folder}/state.db", args.count), flush=True)
    if args.redis:
        print("redis: ", measure(args.redis, args.count), flush=True)


if __name__ == "__main__":
    main()
