"""Restarts without silently cut streams: end open streams properly before the worker dies.

On SIGTERM gunicorn stops accepting and gives open requests GRACEFUL_TIMEOUT seconds;
then the master SIGKILLs the worker, and a stream still running would just stop, with
no error event for the client and no log line. So the worker notes when that will
happen (`begin`, from the SIGTERM handler that gunicorn.conf.py installs), and every
stream still open a little before it ends with one `server_shutting_down` error event
(clients retry on it), writes its log line and metrics, and lets the worker exit.
"""
import math
import signal
import time

MARGIN = 2.0  # seconds before gunicorn's kill at which open streams are ended

cut_at = math.inf  # monotonic time at which open streams end; inf while not shutting down


def begin(graceful_timeout, now=None):
    """Plan the end of open streams for a shutdown that allows `graceful_timeout` seconds."""
    global cut_at
    margin = min(MARGIN, graceful_timeout / 2)
    start = time.monotonic() if now is None else now
    cut_at = min(cut_at, start + max(graceful_timeout - margin, 0.0))


def reset():
    """Forget a planned shutdown (tests)."""
    global cut_at
    cut_at = math.inf


def install(worker):
    """Chain `begin` in front of the worker's own SIGTERM handler (gunicorn's post_worker_init)."""
    original = worker.handle_exit

    def handle_exit(sig, frame):
        begin(worker.cfg.graceful_timeout)
        original(sig, frame)

    signal.signal(signal.SIGTERM, handle_exit)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn set it: no interrupted calls
