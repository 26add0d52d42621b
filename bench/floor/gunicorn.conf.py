"""gunicorn settings of the floor (bench/floor/app.py): the gateway's, without its hooks.

The same worker class, worker_connections and keep-alive as the repository's
gunicorn.conf.py. post_worker_init keeps only what this stack itself offers the floor:
each response's head with its first body bytes in one `send()` (gateway/ops/one_send.py;
importing the gateway package loads Flask into memory, never into a request's path) and
the loaded app out of the collector's way.
"""
import os
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2]))  # the repository, after app.py here

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT') or '8000'}"
workers = int(os.environ.get("WEB_CONCURRENCY") or "2")
worker_class = "gevent"
worker_connections = int(os.environ.get("WORKER_CONNECTIONS") or "4000")
timeout = 30
keepalive = int(os.environ.get("KEEPALIVE") or "5")
preload_app = False
errorlog = "-"
loglevel = "info"


def post_worker_init(worker):
    import gc

    from gateway.ops import one_send

    one_send.install()
    gc.freeze()
