"""gunicorn settings of the floor (bench/floor/app.py): the gateway's own, minus its app hooks.

The repository's gunicorn.conf.py is read as it is, so the floor runs with exactly the
gateway's settings (worker class, worker_connections, keep-alive, timeouts). Only
post_worker_init is replaced: it keeps what this stack itself offers the floor, each
response's head with its first body bytes in one `send()` (gateway/ops/one_send.py;
importing the gateway package loads Flask into memory, never into a request's path) and
the loaded app out of the collector's way.
"""
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
sys.path.append(str(REPOSITORY))  # after this folder, so `app:app` is the floor's app.py
exec(compile((REPOSITORY / "gunicorn.conf.py").read_text(encoding="utf-8"),
             str(REPOSITORY / "gunicorn.conf.py"), "exec"))


def post_worker_init(worker):  # replaces the gateway's
    import gc

    from gateway.ops import one_send

    one_send.install()
    gc.freeze()
