"""gunicorn.conf.py's hooks, called directly."""
import importlib.util
import logging
import os
import signal
import types

import gunicorn.http.wsgi
import gunicorn.util
import pytest

from gateway.ops import shutdown
from tests.servers import ROOT


@pytest.fixture
def conf():
    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "gunicorn.conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_multiproc_dir_keeps_files_the_gateway_did_not_write(conf, tmp_path, monkeypatch):
    """PROMETHEUS_MULTIPROC_DIR=/tmp or the app folder: only prometheus_client's own metric
    files of an earlier run go, everything else stays."""
    ours = ["counter_123.db", "gauge_livesum_77.db", "histogram_9.db", "gauge_all_5.db"]
    theirs = ["notes.txt", "data.db", "counter.db", "app.py", "counter_12.db.bak"]
    for name in ours + theirs:
        (tmp_path / name).write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "counter_1.db").write_text("x")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    conf.on_starting(None)
    assert sorted(os.listdir(tmp_path)) == sorted(theirs + ["sub"])
    assert (tmp_path / "sub" / "counter_1.db").exists()


def test_multiproc_dir_is_created_when_missing(conf, tmp_path, monkeypatch):
    folder = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    conf.on_starting(None)
    assert folder.is_dir()


def test_sigterm_plans_the_end_of_open_streams_before_gunicorn_kills(conf, monkeypatch):
    """post_worker_init chains the shutdown plan in front of the worker's SIGTERM handler."""
    calls = []
    cfg = types.SimpleNamespace(graceful_timeout=30, limit_request_line=4094,
                                limit_request_fields=100, limit_request_field_size=8190)
    worker = types.SimpleNamespace(cfg=cfg, handle_exit=lambda sig, frame: calls.append(sig),
                                   handle_error=lambda *args: None,
                                   log=types.SimpleNamespace(error_log=logging.getLogger("t")))
    previous = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr("gc.freeze", lambda: None)
    # what post_worker_init patches in gunicorn, put back after the test
    monkeypatch.setattr("gunicorn.util.write_error", gunicorn.util.write_error)
    monkeypatch.setattr("gunicorn.http.wsgi.Response", gunicorn.http.wsgi.Response)
    try:
        conf.post_worker_init(worker)
        handler = signal.getsignal(signal.SIGTERM)
        handler(signal.SIGTERM, None)
        assert calls == [signal.SIGTERM]
        import time
        assert 27 < shutdown.cut_at - time.monotonic() <= 28
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutdown.reset()
