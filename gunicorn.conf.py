"""gunicorn settings for the gateway: gevent workers for thousands of open streams.

Plain settings only. Nothing here imports the app or `requests`: gevent patches the
worker after fork, and anything that imported ssl before that breaks (gunicorn #2796).
"""
import glob
import os
import re
import tempfile

from dotenv import load_dotenv

load_dotenv()

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT') or '8000'}"
workers = int(os.environ.get("WEB_CONCURRENCY") or "2")
worker_class = "gevent"
# Open connections per worker; each stream holds one (plus one upstream).
worker_connections = int(os.environ.get("WORKER_CONNECTIONS") or "4000")
# With gevent the heartbeat comes from the worker loop: this is liveness, not request length.
timeout = 30
# Seconds open streams get to finish after SIGTERM before the worker is killed; streams still
# open 2 s before that end with a `server_shutting_down` error event (gateway.ops.shutdown).
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT") or "30")
keepalive = int(os.environ.get("KEEPALIVE") or "5")
preload_app = False  # the app must be imported after gevent's monkey-patching
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
loglevel = (os.environ.get("LOG_LEVEL") or "info").lower()
# Client addresses from X-Forwarded-For are trusted only from these proxies (none by default).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS") or "127.0.0.1,::1"


# The files prometheus_client's multiprocess mode writes: counter_<pid>.db,
# gauge_livesum_<pid>.db, histogram_<pid>.db, ... Nothing else in the folder is ours.
METRIC_FILE = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_\d+\.db")


def on_starting(server):
    """Give the workers a clean shared folder for Prometheus' multiprocess metrics.

    A folder the operator named may hold other files (PROMETHEUS_MULTIPROC_DIR=/tmp):
    only the metric files of an earlier run are removed, never anything else.
    """
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        folder = tempfile.mkdtemp(prefix="cf-ai-endpoint-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        return
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if METRIC_FILE.fullmatch(name) and os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)


def child_exit(server, worker):
    """Drop a dead worker's live gauges (prometheus_client's mark_process_dead, without
    importing prometheus_client, which imports ssl, in the master)."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        for path in glob.glob(os.path.join(folder, f"gauge_live*_{worker.pid}.db")):
            os.remove(path)


def when_ready(server):
    """Say once, in the master, when the gateway cannot reach Cloudflare for lack of credentials."""
    single = os.environ.get("CLOUDFLARE_ACCOUNT_ID") and os.environ.get("CLOUDFLARE_API_TOKEN")
    if not (single or os.environ.get("CLOUDFLARE_ACCOUNTS")):
        server.log.warning("No Cloudflare credentials: set CLOUDFLARE_ACCOUNT_ID and "
                           "CLOUDFLARE_API_TOKEN (or CLOUDFLARE_ACCOUNTS) in .env or the "
                           "environment. Until then requests that need Cloudflare get 503.")


def post_worker_init(worker):
    """Move the loaded app out of the garbage collector's way: fewer objects to scan on
    every collection of a busy worker (about 3% of its CPU in bench/ profiles). And on
    SIGTERM, end streams still open shortly before GRACEFUL_TIMEOUT runs out with an error
    event, rather than have them cut (gateway.ops.shutdown; the app is loaded by now).
    Each response's head goes out with its first body bytes (gateway/ops/one_send.py), an
    app's `Connection: close` ends the connection (gateway/ops/closing.py), and the errors
    gunicorn answers itself are OpenAI-shaped JSON (gateway/ops/server_errors.py)."""
    import gc

    from gateway.ops import closing, one_send, server_errors, shutdown

    shutdown.install(worker)
    one_send.install()
    closing.install()  # after one_send: builds on its Response class
    server_errors.install(worker)
    gc.freeze()
