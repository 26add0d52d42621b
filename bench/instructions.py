"""Instructions per request, this tree against another commit: a figure a busy machine
cannot move.

On a shared two-core VM the gateway's CPU seconds per 1,000 requests move by 10-15%
from one run to the next, even for two builds measured side by side in rotating
rounds (bench/RESULTS.md): the neighbours change the clock rate and the caches, not
only the share of the cores. valgrind's callgrind counts the instructions a process
executes instead, which the neighbours cannot change: the same build measures the
same to within about 2-3% (what is left comes from timing: how often a read finds its
answer already there, when the garbage collector runs).

What is measured: the WSGI application in one process (every hook, the request body,
validation, the upstream call through the real connection pool to bench's fake
Workers AI, the translation, the log line and metrics), one request at a time, for a
non-stream request (`ns`) or a whole 64-token stream (`stream`). Not measured: gunicorn's
parsing and socket writes, gevent's hub between requests and the kernel; `run.py`
measures those, in seconds. Each build runs twice as many requests as the warm-up
and the difference is divided by the requests, so start-up and imports drop out.

    python bench/instructions.py --base 507061e            # both modes
    python bench/instructions.py --base HEAD~1 --mode ns --requests 400

valgrind is installed with apt-get when missing (Debian), as the tests install nginx.
"""
import argparse
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WARM_UP = 30  # requests before counting starts, in every run


def ensure_valgrind():
    if shutil.which("valgrind"):
        return
    print("valgrind is missing: installing it with apt-get", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "valgrind"], check=True, timeout=600,
                   stdout=subprocess.DEVNULL)


def count(python, root, mode, requests):
    """Instructions callgrind counted in a child that served `requests` requests."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", str(python),
         str(Path(__file__)), "--child", str(root), "--mode", mode, "--requests", str(requests)],
        capture_output=True, text=True, env=env, timeout=3600)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"the measured child failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return int(found.group(1))


def per_request(python, root, mode, requests):
    """Instructions per request: (a run of 2n requests - a run of n) / n."""
    return (count(python, root, mode, 2 * requests) - count(python, root, mode, requests)) / requests


def child(root, mode, requests):
    """Serve `requests` requests through the app of `root` (run under callgrind)."""
    from gevent import monkey

    monkey.patch_all()
    sys.path[:0] = [str(root), str(BENCH)]
    os.chdir(root)
    import common
    fake = subprocess.Popen([sys.executable, str(BENCH / "fake_upstream.py"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        port = int(fake.stdout.readline().decode().split()[-1].rsplit(":", 1)[-1])
        state = tempfile.mkdtemp(prefix="bench-instructions-")
        os.environ.update({
            "API_KEYS": common.API_KEY, "CLOUDFLARE_ACCOUNT_ID": common.ACCOUNT,
            "CLOUDFLARE_API_TOKEN": common.TOKEN, "MODELS": common.MODEL,
            "CLOUDFLARE_API_BASE": f"http://127.0.0.1:{port}/client/v4",
            "STATE_URL": f"sqlite:///{state}/state.db", "PROMETHEUS_MULTIPROC_DIR": state})
        import config
        from gateway import create_app
        app = create_app(config.Config)
        import logging
        for handler in logging.getLogger("gateway").handlers:
            handler.stream = open(os.devnull, "w")  # the line is still formatted and written
        serve = _requester(app, common, mode == "stream")
        for _ in range(WARM_UP + requests):
            serve()
    finally:
        fake.kill()


def _requester(app, common, stream):
    import orjson

    body = {"model": common.MODEL, "max_tokens": 64, "temperature": 0.6,
            "messages": [{"role": "user", "content": common.directive(1, 64, 0, 0)}]}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    payload = orjson.dumps(body)
    base = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/chat/completions", "SCRIPT_NAME": "",
            "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(payload)),
            "HTTP_AUTHORIZATION": f"Bearer {common.API_KEY}", "HTTP_HOST": "127.0.0.1:8000",
            "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.version": (1, 0),
            "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
            "wsgi.input_terminated": True}

    def serve():
        status = []
        answer = app({**base, "wsgi.input": io.BytesIO(payload)},
                     lambda line, headers, exc_info=None: status.append(line))
        size = sum(len(piece) for piece in answer)
        getattr(answer, "close", lambda: None)()
        if not status[0].startswith("200") or not size:
            raise SystemExit(f"the app answered {status[0]}")

    return serve


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="git ref to compare with (default: this tree alone)")
    parser.add_argument("--mode", choices=("ns", "stream", "both"), default="both")
    parser.add_argument("--requests", type=int, default=200, help="n: runs of n and 2n requests")
    parser.add_argument("--repeat", type=int, default=2, help="measurements per build, median")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(Path(args.child), args.mode, args.requests)
    ensure_valgrind()
    import compare
    builds = [("current", sys.executable, ROOT)]
    base = compare.BaseBuild(args.base).open() if args.base else None
    if base is not None:
        builds.append((f"base {base.short}", base.python, base.root))
    try:
        modes = ("ns", "stream") if args.mode == "both" else (args.mode,)
        print("| request | build | instructions per request | current / base |\n|---|---|---|---|")
        for mode in modes:
            figures = {}
            for name, python, root in builds:
                runs = [per_request(python, root, mode, args.requests) for _ in range(args.repeat)]
                figures[name] = statistics.median(runs)
                spread = f" (runs: {', '.join(f'{r / 1e6:.3f}' for r in runs)})"
                ratio = (f"{figures['current'] / figures[name]:.2f}x" if name != "current"
                         else "")
                label = "non-stream" if mode == "ns" else "stream, 64 tokens"
                print(f"| {label} | {name} | {figures[name] / 1e6:.3f} M{spread} | {ratio} |",
                      flush=True)
    finally:
        if base is not None:
            base.close()


if __name__ == "__main__":
    main()
