"""Run the real gateway (gunicorn + gevent, `gunicorn.conf.py`) as a subprocess for end-to-end tests.

The environment is given in full, so a developer's own `.env` cannot leak into a test
(python-dotenv never overrides a variable that is already set, even to "").
"""
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
GATEWAY_SETTINGS = ("API_KEYS", "API_KEY", "CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN",
                    "CLOUDFLARE_ACCOUNTS", "CLOUDFLARE_API_BASE", "MODELS", "CORS_ORIGINS",
                    "MAX_INPUT_CHARS", "DEFAULT_MAX_TOKENS", "MODELS_CACHE_TTL", "PORT",
                    "WEB_CONCURRENCY", "LOG_LEVEL", "LOG_FORMAT", "METRICS_TOKEN",
                    "ACCOUNT_COOLDOWN", "UPSTREAM_RETRIES", "UPSTREAM_RETRY_AFTER_CAP",
                    "UPSTREAM_TOTAL_TIMEOUT", "STREAM_MAX_DURATION", "STREAM_HEARTBEAT",
                    "UPSTREAM_CONNECT_TIMEOUT", "UPSTREAM_READ_TIMEOUT", "UPSTREAM_POOL_SIZE",
                    "MAX_BODY_BYTES", "WORKER_CONNECTIONS", "GRACEFUL_TIMEOUT", "KEEPALIVE",
                    "ACCESS_LOG", "FORWARDED_ALLOW_IPS", "HOST", "PROXY_HOPS",
                    "UPSTREAM_CA_BUNDLE", "STATE_URL", "STATE_TIMEOUT", "ADMIN_TOKEN",
                    "CLIENT_BODY_TIMEOUT", "CLIENT_WRITE_TIMEOUT", "MAX_MESSAGES",
                    "MAX_CONTENT_PARTS", "METRICS_ALLOW_IPS", "UPSTREAM_MAX_BODY_BYTES",
                    "RESPONSES_TTL", "IMAGE_FETCH", "IMAGE_FETCH_MAX_BYTES", "IMAGE_FETCH_TIMEOUT",
                    "IMAGE_FETCH_ALLOW_HOSTS", "PLAYGROUND", "MODEL_ALIASES", "EMBEDDINGS_MAX_INPUTS",
                    "UPSTREAM_FANOUT", "AUDIO_MAX_BYTES")


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(base_url, process, timeout=30.0):
    """Poll /healthz until the server answers; fail early if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}")
        try:
            if requests.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError("gateway did not become healthy in time")


@contextmanager
def run_gateway(settings, log_path, workers=1):
    """Start gunicorn with `settings` (the gateway's env vars); yield (base_url, process)."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in GATEWAY_SETTINGS}
    env.update({name: "" for name in GATEWAY_SETTINGS})
    env.update({"PORT": str(port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": str(workers),
                "PYTHONUNBUFFERED": "1",
                # the state next to the log, never in the checkout's state/
                "STATE_URL": f"sqlite:///{Path(log_path).resolve().with_suffix('.state.db')}"})
    env.update({key: str(value) for key, value in settings.items()})
    gunicorn = Path(sys.executable).with_name("gunicorn")
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(gunicorn), "-c", "gunicorn.conf.py", "app:app"],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base_url, process)
        yield base_url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
