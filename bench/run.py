"""Benchmark driver: every scenario against the fake directly (the floor) and through the gateway.

Starts the fake upstream (`fake_upstream.py`) and the gateway the README's way
(`gunicorn -c gunicorn.conf.py app:app`, gevent workers, `WEB_CONCURRENCY=2`) with a
clean environment pointing it at the fake, then for each scenario runs the load
generator (`loadgen.py`, a separate process) alternately against the fake's own OpenAI
route and against the gateway (round 1: direct then gateway, round 2: gateway then
direct, ...), so drift on the shared machine falls on both paths alike. During every
gateway round it reads the CPU time (utime + stime) of the gunicorn master and workers
from /proc before and after, and samples their resident memory every 100 ms.

It prints one table (and writes it, with the raw numbers, to `bench/results/`):
requests ok/failed, throughput, latency p50/p99 (non-stream), time to first token and
whole-stream time p50/p99 (stream), the gateway's figures also as milliseconds added
and ratio against direct, its CPU seconds per 1,000 requests and its peak RSS; then the
issue's targets, each marked met or missed.

Everything is bounded (each round in seconds and in requests, each request by a
timeout) and talks only to 127.0.0.1.

    python bench/run.py            # full run (about 7 minutes)
    python bench/run.py --quick    # about one minute
    python bench/run.py --scenarios s500 --profile s500   # py-spy on the workers too
"""
import argparse
import datetime
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import common  # noqa: E402
import compare  # noqa: E402
import plots  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024

# Every setting the gateway reads (README, config.py, gunicorn.conf.py): blanked unless set
# below, so neither the caller's environment nor a developer's .env changes the gateway.
GATEWAY_SETTINGS = (
    "API_KEYS", "API_KEY", "CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNTS",
    "CLOUDFLARE_API_BASE", "MODELS", "CORS_ORIGINS", "MAX_INPUT_CHARS", "DEFAULT_MAX_TOKENS",
    "MODELS_CACHE_TTL", "MAX_BODY_BYTES", "UPSTREAM_CONNECT_TIMEOUT", "UPSTREAM_READ_TIMEOUT",
    "UPSTREAM_POOL_SIZE", "UPSTREAM_RETRIES", "UPSTREAM_RETRY_AFTER_CAP", "UPSTREAM_TOTAL_TIMEOUT",
    "STREAM_MAX_DURATION", "STREAM_HEARTBEAT", "ACCOUNT_COOLDOWN", "PORT", "HOST",
    "WEB_CONCURRENCY", "WORKER_CONNECTIONS", "GRACEFUL_TIMEOUT", "KEEPALIVE", "LOG_LEVEL",
    "LOG_FORMAT", "ACCESS_LOG", "FORWARDED_ALLOW_IPS", "PROXY_HOPS", "METRICS_TOKEN", "PLAYGROUND",
    "GUNICORN_CMD_ARGS", "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
    "ALL_PROXY", "no_proxy", "NO_PROXY",
)


@dataclass
class Scenario:
    key: str
    title: str
    stream: bool
    clients: int
    duration: float        # seconds of new requests per round (full run)
    quick: float           # the same for --quick
    max_requests: int      # request budget per round
    gap_ms: int = 20       # streams: first token after 50 ms, then one per gap_ms
    limited: bool = False  # through the gateway with a stored key that has every limit set

    def load_args(self, duration):
        args = ["--clients", str(self.clients), "--duration", str(duration),
                "--max-requests", str(self.max_requests), "--tokens", "64", "--max-tokens", "64"]
        if self.stream:
            # Clients start spread over one stream's length (at most 2 s).
            ramp = min(2.0, 0.05 + self.gap_ms / 1000 * 63) if self.clients > 1 else 0
            args += ["--stream", "--first-ms", "50", "--gap-ms", str(self.gap_ms),
                     "--ramp", f"{ramp:.2f}", "--timeout", "120"]
        else:
            args += ["--ramp", "0.05" if self.clients > 1 else "0", "--timeout", "30"]
        return args


SCENARIOS = [
    Scenario("ns1", "non-stream, 1 client", False, 1, 10, 3, 200_000),
    # The same with a stored key whose limits (rpm, tpm, max_parallel, daily budget) are set
    # too high to trip: what the per-key check and the settlement cost, next to API_KEYS.
    Scenario("ns1k", "non-stream, 1 client, limited key", False, 1, 10, 3, 200_000, limited=True),
    Scenario("ns50", "non-stream, 50 clients", False, 50, 10, 3, 500_000),
    Scenario("s1", "stream, 1 client", True, 1, 20, 4, 2_000),
    Scenario("s50", "stream, 50 clients", True, 50, 12, 4, 20_000),
    Scenario("s50k", "stream, 50 clients, limited key", True, 50, 12, 4, 20_000, limited=True),
    Scenario("s500", "stream, 500 clients", True, 500, 15, 4, 50_000),
    Scenario("s2000", "stream, 2,000 clients", True, 2000, 15, 5, 100_000),
    # Memory at 2,000 streams really open at once: the same streams, one token per 200 ms
    # (12.7 s each), so the gateway's CPU is not what keeps connections waiting.
    Scenario("m2000", "stream, 2,000 clients, 1 token / 200 ms", True, 2000, 14, 3, 20_000,
             gap_ms=200),
]


# ---------------------------------------------------------------------------- processes


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings_read_by_gateway(root=ROOT):
    """Every environment variable name the gateway's sources read (found by a regex)."""
    names = set()
    pattern = re.compile(r'(?:environ\.get|getenv|environ\[|_env|_csv|_flag)\(?\s*"([A-Z][A-Z0-9_]+)"')
    for path in (root / "config.py", root / "gunicorn.conf.py", *sorted(root.glob("gateway/**/*.py"))):
        try:
            names.update(pattern.findall(path.read_text(encoding="utf-8")))
        except OSError:
            pass
    return names


def dotenv_keys(path):
    """Names set in a .env file, so that the gateway's load_dotenv cannot bring them in."""
    keys = []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                keys.append(line.removeprefix("export ").split("=", 1)[0].strip())
    except OSError:
        pass
    return keys


def get(port, path, timeout=1.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def fake_stats(port, reset=False):
    """The fake's counters; with `reset`, its peak of open streams starts again from now."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST" if reset else "GET", "/_bench/stats")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def wait_streams_closed(port, timeout=30.0):
    """Wait until no stream is open at the fake (the previous round has drained)."""
    deadline = time.monotonic() + timeout
    while fake_stats(port)["streams_open"] and time.monotonic() < deadline:
        time.sleep(0.2)


def wait_healthy(port, process, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        try:
            if get(port, "/healthz") == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not become healthy in {timeout:.0f} s")


def stop(process, timeout=20.0):
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_fake(python, log_dir):
    log = open(log_dir / "fake.log", "wb")
    process = subprocess.Popen([python, str(BENCH / "fake_upstream.py"), "--port", "0",
                                "--stats-interval", "10"],
                               stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
    line = process.stdout.readline().decode().strip()
    if not line.startswith("listening "):
        stop(process)
        raise SystemExit(f"fake upstream did not start: {line!r}")
    port = int(line.rsplit(":", 1)[1])
    wait_healthy(port, process, "the fake upstream")
    return process, port


def state_url(log_dir, name="gateway"):
    """The gateway's state store: a file in the results folder, never the checkout's state/."""
    return f"sqlite:///{log_dir / f'state-{name}.db'}"


def create_limited_key(python, log_dir, root=ROOT, name="gateway"):
    """A stored key with every limit set, too high to trip (the `limited` scenarios use it)."""
    env = {k: v for k, v in os.environ.items() if k not in GATEWAY_SETTINGS}
    env["STATE_URL"] = state_url(log_dir, name)
    flask = Path(python).with_name("flask")
    made = subprocess.run(
        [str(flask), "--app", "app", "keys", "create", "--name", "bench-limited",
         "--rpm", "1000000000", "--tpm", "1000000000000", "--max-parallel", "1000000",
         "--daily-tokens", "1000000000000000"], cwd=root, env=env, capture_output=True,
        text=True, timeout=60)
    if made.returncode != 0:
        raise SystemExit(f"could not create the limited key:\n{made.stdout}{made.stderr}")
    return made.stdout.strip().splitlines()[-1]


def start_gateway(python, fake_port, workers, log_dir, extra_env, log_name=None, root=ROOT,
                  name="gateway"):
    """The gateway of the source tree `root` (the base's with --base), as `name`."""
    port = free_port()
    own = "" if name == "gateway" else f"-{name}"  # the current gateway keeps the old file names
    env = {k: v for k, v in os.environ.items() if k not in GATEWAY_SETTINGS}
    env.update({setting: "" for setting in (*GATEWAY_SETTINGS, *settings_read_by_gateway(root),
                                            *settings_read_by_gateway(ROOT),
                                            *dotenv_keys(ROOT / ".env"))})
    env.update({
        "API_KEYS": common.API_KEY,
        "CLOUDFLARE_ACCOUNT_ID": common.ACCOUNT,
        "CLOUDFLARE_API_TOKEN": common.TOKEN,
        "CLOUDFLARE_API_BASE": f"http://127.0.0.1:{fake_port}/client/v4",
        "MODELS": common.MODEL,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        # A worker may get most of the 2,000 streams: one upstream connection each.
        "UPSTREAM_POOL_SIZE": "2000",
        "PYTHONUNBUFFERED": "1",
        "STATE_URL": state_url(log_dir, name),
        # Where the workers' Prometheus files go (gunicorn.conf.py empties it at start).
        "PROMETHEUS_MULTIPROC_DIR": str(log_dir / f"prometheus{own}"),
        # gunicorn's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl),
        # shared with every other gunicorn on the machine: give this one its own.
        "GUNICORN_CMD_ARGS": f"--control-socket {log_dir / f'gunicorn{own}.ctl'}",
    })
    env.update({**extra_env, "GUNICORN_CMD_ARGS": " ".join(
        filter(None, (env["GUNICORN_CMD_ARGS"], extra_env.get("GUNICORN_CMD_ARGS"))))})
    gunicorn = Path(python).with_name("gunicorn")
    log = open(log_dir / (log_name or f"{name}.log"), "wb")
    process = subprocess.Popen([str(gunicorn), "-c", "gunicorn.conf.py", "app:app"], cwd=root,
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_healthy(port, process, f"the {name} gateway")
    deadline = time.monotonic() + 20
    while len(children(process.pid)) < workers and time.monotonic() < deadline:
        time.sleep(0.1)
    return process, port


def children(pid):
    """Direct children of `pid` (gunicorn's workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return sorted(found)


def cpu_seconds(pids, kernel_only=False):
    """utime + stime (or stime alone) of `pids`, in seconds."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            total += (int(fields[12]) + (0 if kernel_only else int(fields[11]))) / CLK_TCK
        except (OSError, IndexError, ValueError):
            pass
    return total


def machine_busy_seconds():
    """CPU seconds the whole machine spent busy (all cores, /proc/stat), for the noise check."""
    with open("/proc/stat", "rb") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


class MemorySampler(threading.Thread):
    """Peak RSS per process and peak total over the gateway's processes, every 100 ms."""

    def __init__(self, master):
        super().__init__(daemon=True)
        self.master = master
        self.stop_event = threading.Event()
        self.peak_worker = 0
        self.peak_master = 0
        self.peak_total = 0
        self.peak_fds = {}  # worker pid -> most open file descriptors seen (client + upstream)

    def sample(self):
        workers = children(self.master)
        sizes = [rss_bytes(pid) for pid in workers]
        master = rss_bytes(self.master)
        for pid in workers:
            try:
                self.peak_fds[pid] = max(self.peak_fds.get(pid, 0), len(os.listdir(f"/proc/{pid}/fd")))
            except OSError:
                pass
        self.peak_worker = max([self.peak_worker, *sizes])
        self.peak_master = max(self.peak_master, master)
        self.peak_total = max(self.peak_total, master + sum(sizes))

    def run(self):
        while not self.stop_event.wait(0.1):
            self.sample()

    def finish(self):
        self.stop_event.set()
        self.join()
        self.sample()


# ---------------------------------------------------------------------------- running


def run_load(python, url, key, args, out_path, timeout):
    cmd = [python, str(BENCH / "loadgen.py"), "--url", url, "--key", key, "--out", str(out_path),
           *args]
    process = subprocess.Popen(cmd, cwd=ROOT)
    return process


def wait_load(process, out_path, timeout):
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise SystemExit("the load generator overran its hard time limit") from None
    if process.returncode != 0:
        raise SystemExit(f"the load generator failed with {process.returncode}")
    return json.loads(out_path.read_text())


def profile_workers(workers, duration, out_dir, label, native=False):
    """py-spy on every worker for `duration` s (collapsed stacks); returns the processes."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        print("py-spy is not installed: no profile", file=sys.stderr)
        return []
    spies = []
    for pid in workers:
        out = out_dir / f"profile-{label}-{pid}.txt"
        spies.append(subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--duration", str(int(duration)),
             "--rate", "200", "--format", "raw", *(["--native"] if native else ["--nonblocking"]),
             "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
    return spies


def one_round(ctx, scenario, target, duration, round_no, seed_base):
    """One load-generator run against `target` ("direct", "gateway" or, with --base, "base")."""
    port = ctx["fake_port"] if target == "direct" else ctx[f"{target}_port"]
    # Only the current gateway knows stored keys (a --base build may predate them).
    key = ctx["limited_key"] if scenario.limited and target == "gateway" else common.API_KEY
    out_path = ctx["out_dir"] / f"raw-{scenario.key}-{target}-{round_no}.json"
    args = scenario.load_args(duration) + ["--seed-base", str(seed_base)]
    hard = duration + 120 + 30
    wait_streams_closed(ctx["fake_port"])
    fake_stats(ctx["fake_port"], reset=True)
    if target == "direct":
        fake_cpu0 = cpu_seconds([ctx["fake"].pid])
        busy0 = machine_busy_seconds()
        result = wait_load(run_load(ctx["python"], f"http://127.0.0.1:{port}", key,
                                    args, out_path, hard), out_path, hard)
        result["fake_cpu"] = cpu_seconds([ctx["fake"].pid]) - fake_cpu0
        result["other_cpu"] = machine_busy_seconds() - busy0 - result["fake_cpu"] - result["cpu"]
        result["peak_streams"] = fake_stats(ctx["fake_port"])["streams_peak"]
        return result
    master = ctx[target].pid
    workers = children(master)
    sampler = MemorySampler(master)
    sampler.sample()
    spies = []
    if scenario.key in ctx["profile"]:
        label = f"{scenario.key}-{round_no}" if target == "gateway" else \
            f"{scenario.key}-{target}-{round_no}"
        spies = profile_workers(workers, duration, ctx["out_dir"], label, native=ctx["native"])
    cpu0 = cpu_seconds([master, *workers])
    sys0 = cpu_seconds([master, *workers], kernel_only=True)
    per_worker0 = [cpu_seconds([pid]) for pid in workers]
    fake_cpu0 = cpu_seconds([ctx["fake"].pid])
    busy0 = machine_busy_seconds()
    sampler.start()
    process = run_load(ctx["python"], f"http://127.0.0.1:{port}", key, args, out_path, hard)
    try:
        result = wait_load(process, out_path, hard)
    finally:
        sampler.finish()
        for spy in spies:
            spy.wait()
    now_workers = children(master)
    result["gateway_cpu"] = cpu_seconds([master, *workers]) - cpu0
    result["gateway_sys"] = cpu_seconds([master, *workers], kernel_only=True) - sys0
    result["worker_cpu"] = [cpu_seconds([pid]) - before for pid, before in zip(workers, per_worker0)]
    result["worker_peak_fds"] = [sampler.peak_fds.get(pid, 0) for pid in workers]
    result["fake_cpu"] = cpu_seconds([ctx["fake"].pid]) - fake_cpu0
    result["other_cpu"] = (machine_busy_seconds() - busy0 - result["fake_cpu"] - result["cpu"]
                           - result["gateway_cpu"])
    result["workers_restarted"] = now_workers != workers
    result["peak_streams"] = fake_stats(ctx["fake_port"])["streams_peak"]
    result["peak_rss_worker"] = sampler.peak_worker
    result["peak_rss_master"] = sampler.peak_master
    result["peak_rss_total"] = sampler.peak_total
    return result


class GatewayDied(Exception):
    def __init__(self, message, name="gateway"):
        super().__init__(message)
        self.name = name


def run_scenario(ctx, scenario, duration, rounds, seed):
    """All rounds of one scenario, alternating the paths; (results by path, next seed)."""
    paths = ctx.get("paths", ("direct", "gateway"))
    results = {path: [] for path in paths}
    for round_no in range(1, rounds + 1):
        if len(paths) == 2:
            order = ("direct", "gateway") if round_no % 2 else ("gateway", "direct")
        else:  # --base: direct, current, base, each round starting one further
            order = compare.path_order(paths, ctx.get("rounds_run", 0))
        ctx["rounds_run"] = ctx.get("rounds_run", 0) + 1
        for target in order:
            result = one_round(ctx, scenario, target, duration, round_no, seed)
            seed += result["ok"] + result["failed"] + 1
            results[target].append(result)
            samples = result["latency"] or result["total"]
            print(f"  {scenario.key:>6} {target:>7} round {round_no}: {result['ok']} ok, "
                  f"{result['failed']} failed, {result['throughput']:.0f} req/s, "
                  f"p50 {percentile(samples, 0.5) or 0:.2f} ms", flush=True)
            time.sleep(0.5)  # let closed connections and timers settle
            for name in paths[1:]:
                if ctx[name].poll() is not None:
                    raise GatewayDied(f"the {name} gateway exited with {ctx[name].returncode} "
                                      f"(something sent it a signal?)", name)
    return results, seed


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    position = (len(values) - 1) * q
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def merge(results):
    """One path's rounds of one scenario, merged."""
    merged = {"ok": 0, "failed": 0, "failures": {}, "latency": [], "ttft": [], "total": [],
              "throughput": [], "cpu": 0.0, "fake_cpu": 0.0, "wall": 0.0, "gateway_cpu": 0.0,
              "gateway_sys": 0.0, "other_cpu": 0.0,
              "peak_rss_worker": 0, "peak_rss_total": 0, "workers_restarted": False,
              "worker_cpu": [], "worker_peak_fds": [], "peak_streams": 0}
    for result in results:
        merged["ok"] += result["ok"]
        merged["failed"] += result["failed"]
        for reason, count in result["failures"].items():
            merged["failures"][reason] = merged["failures"].get(reason, 0) + count
        for name in ("latency", "ttft", "total"):
            merged[name] += result[name]
        merged["throughput"].append(result["throughput"])
        merged["cpu"] += result["cpu"]
        merged["fake_cpu"] += result.get("fake_cpu", 0.0)
        merged["wall"] += result["wall"]
        merged["gateway_cpu"] += result.get("gateway_cpu", 0.0)
        merged["gateway_sys"] += result.get("gateway_sys", 0.0)
        merged["other_cpu"] += result.get("other_cpu", 0.0)
        merged["peak_rss_worker"] = max(merged["peak_rss_worker"], result.get("peak_rss_worker", 0))
        merged["peak_rss_total"] = max(merged["peak_rss_total"], result.get("peak_rss_total", 0))
        merged["workers_restarted"] |= result.get("workers_restarted", False)
        merged["peak_streams"] = max(merged["peak_streams"], result.get("peak_streams", 0))
        if "worker_cpu" in result:
            merged["worker_cpu"].append([round(x, 2) for x in result["worker_cpu"]])
            merged["worker_peak_fds"].append(result["worker_peak_fds"])
    merged["throughput"] = sum(merged["throughput"]) / max(1, len(merged["throughput"]))
    for name in ("latency", "ttft", "total"):
        samples = merged.pop(name)
        merged[name] = {"p50": percentile(samples, 0.50), "p99": percentile(samples, 0.99),
                        "n": len(samples)}
    attempts = merged["ok"] + merged["failed"]
    merged["gateway_cpu_per_1k"] = (merged["gateway_cpu"] * 1000 / attempts) if attempts else None
    return merged


# ---------------------------------------------------------------------------- report


def fmt_ms(value):
    if value is None:
        return "–"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def vs(gateway, direct):
    """`12.3 (+1.20 ms, 1.11x)` for a gateway figure against the direct one."""
    if gateway is None or direct is None:
        return fmt_ms(gateway)
    added = gateway - direct
    ratio = gateway / direct if direct else float("inf")
    return f"{fmt_ms(gateway)} ({added:+.2f} ms, {ratio:.2f}x)"


def table(summary):
    head = ("| scenario | path | ok | failed | req/s | latency p50 | latency p99 | TTFT p50 | "
            "TTFT p99 | stream p50 | stream p99 | gateway CPU s / 1k req | peak RSS / worker | "
            "peak RSS, all |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for scenario in summary["scenarios"]:
        direct = scenario["direct"]
        for path, data in ((p, scenario[p]) for p in ("direct", "gateway", "base") if p in scenario):
            cells = [scenario["title"] if path == "direct" else "", path, str(data["ok"]),
                     str(data["failed"])]
            if path == "direct":
                cells.append(f"{data['throughput']:.0f}")
            else:
                ratio = (data["throughput"] / direct["throughput"]) if direct["throughput"] else 0
                cells.append(f"{data['throughput']:.0f} ({ratio:.2f}x)")
            for metric in ("latency", "ttft", "total"):
                for q in ("p50", "p99"):
                    value = data[metric][q]
                    if path == "direct":
                        cells.append(fmt_ms(value) if value is not None else "–")
                    else:
                        cells.append(vs(value, direct[metric][q]) if value is not None else "–")
            if path != "direct":
                per_1k = data["gateway_cpu_per_1k"]
                cells += [f"{per_1k:.2f}" if per_1k is not None else "–",
                          f"{data['peak_rss_worker'] / MIB:.0f} MiB",
                          f"{data['peak_rss_total'] / MIB:.0f} MiB"]
            else:
                cells += ["", "", ""]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(summary):
    """The issue's targets, each with the measured figure and met/missed."""
    by_key = {s["key"]: s for s in summary["scenarios"]}
    rows = []

    def check(name, target, measured, met):
        verdict = "not measured (too few streams open)" if met is None else (
            "met" if met else "**missed**")
        rows.append(f"| {name} | {target} | {measured} | {verdict} |")

    def get(key):
        return by_key.get(key)

    if (s := get("ns1")) and s["gateway"]["latency"]["p50"] is not None:
        added = s["gateway"]["latency"]["p50"] - s["direct"]["latency"]["p50"]
        check("non-stream, 1 client", "≤ 1.0 ms added to p50", f"{added:+.2f} ms", added <= 1.0)
    if ((s := get("ns1k")) and (u := get("ns1")) and s["gateway"]["latency"]["p50"] is not None
            and u["gateway"]["latency"]["p50"] is not None):
        added = s["gateway"]["latency"]["p50"] - u["gateway"]["latency"]["p50"]
        check("limited key, non-stream, 1 client", "per-key check ≤ 0.3 ms added to p50 "
              "(vs API_KEYS)", f"{added:+.2f} ms", added <= 0.3)
    if (s := get("ns50")) and s["gateway"]["latency"]["p99"] is not None:
        rps, p99 = s["gateway"]["throughput"], s["gateway"]["latency"]["p99"]
        check("non-stream, 50 clients", "≥ 2,000 req/s", f"{rps:.0f} req/s", rps >= 2000)
        check("non-stream, 50 clients", "p99 < 25 ms", f"{p99:.1f} ms", p99 < 25)
    if (s := get("s1")) and s["gateway"]["ttft"]["p50"] is not None:
        added = s["gateway"]["ttft"]["p50"] - s["direct"]["ttft"]["p50"]
        check("stream, 1 client", "≤ 2 ms added to TTFT (p50)", f"{added:+.2f} ms", added <= 2.0)
    if (s := get("s500")) and s["gateway"]["total"]["p50"] is not None:
        ratio = s["gateway"]["total"]["p50"] / s["direct"]["total"]["p50"]
        added = s["gateway"]["ttft"]["p99"] - s["direct"]["ttft"]["p99"]
        check("stream, 500 clients", "stream p50 ≤ 1.10x direct", f"{ratio:.2f}x", ratio <= 1.10)
        check("stream, 500 clients", "TTFT p99 ≤ direct + 100 ms", f"{added:+.1f} ms",
              added <= 100)
        check("stream, 500 clients", "zero failures", str(s["gateway"]["failed"]),
              s["gateway"]["failed"] == 0)
    if s := get("s2000"):
        check("stream, 2,000 clients", "zero failures, every stream complete and correct",
              f"{s['gateway']['ok']} ok, {s['gateway']['failed']} failed",
              s["gateway"]["failed"] == 0 and s["gateway"]["ok"] > 0)
    stream_costs = {s["clients"]: s["gateway"]["gateway_cpu_per_1k"] for s in summary["scenarios"]
                    if s["key"] in ("s50", "s500", "s2000")
                    and s["gateway"]["gateway_cpu_per_1k"] is not None}
    if stream_costs:
        worst = max(stream_costs.values())
        shown = ", ".join(f"{cost:.2f} s at {clients}" for clients, cost in stream_costs.items())
        check("cost", "≤ 3 CPU s per 1,000 64-token streams (50+ clients)", shown, worst <= 3.0)
    held = [s for s in (get("s2000"), get("m2000")) if s]
    if held:
        peak = max(s["gateway"]["peak_rss_worker"] for s in held) / MIB
        most = max(s["gateway"]["peak_streams"] for s in held)
        check("cost", "≤ 100 MiB RSS per worker at 2,000 streams",
              f"{peak:.0f} MiB, with at most {most} streams open at once in the gateway",
              peak <= 100 if most >= 1900 else None)
    return "\n".join(["| scenario | target | measured (gateway) | |", "|---|---|---|---|", *rows])


def report(summary):
    env = summary["environment"]
    failures = []
    for scenario in summary["scenarios"]:
        for path in ("direct", "gateway", "base"):
            if path not in scenario:
                continue
            for reason, count in scenario[path]["failures"].items():
                failures.append(f"- {scenario['title']}, {path}: {count} × {reason}")
            if scenario[path].get("workers_restarted"):
                failures.append(f"- {scenario['title']}: a {path} worker was restarted")
    load = ["| scenario | load generator, direct / gateway | fake, direct / gateway | "
            "gateway (all processes) | of which in the kernel | CPU s per worker, per round | "
            "peak open fds per worker | most upstream streams open at once, direct / gateway | "
            "everything else on the machine, direct / gateway |",
            "|---|---|---|---|---|---|---|---|---|"]
    for scenario, title, g in _gateway_rounds(summary):
        d = scenario["direct"]
        if d["wall"] and g["wall"]:
            load.append(f"| {title} | {100 * d['cpu'] / d['wall']:.0f}% / "
                        f"{100 * g['cpu'] / g['wall']:.0f}% | {100 * d['fake_cpu'] / d['wall']:.0f}%"
                        f" / {100 * g['fake_cpu'] / g['wall']:.0f}% | "
                        f"{100 * g['gateway_cpu'] / g['wall']:.0f}% | "
                        f"{100 * g['gateway_sys'] / max(g['gateway_cpu'], 1e-9):.0f}% | "
                        f"{g['worker_cpu']} | "
                        f"{g['worker_peak_fds']} | {d['peak_streams']} / {g['peak_streams']} | "
                        f"{max(0, 100 * d['other_cpu'] / d['wall']):.0f}% / "
                        f"{max(0, 100 * g['other_cpu'] / g['wall']):.0f}% |")
    return "\n".join([
        f"Benchmark of {summary['revision']}, {summary['date']}, {env['cores']} cores "
        f"({env['cpu']}), Python {env['python']}, `{summary['command']}`",
        *([f"The current gateway is the app of `{env['current_root']}` (--current-root), "
           "not this tree's."] if env.get("current_root") else []),
        f"(gateway: gunicorn + gevent, WEB_CONCURRENCY={env['workers']}; {summary['rounds']} "
        f"round(s) per path, alternating; 64-token replies; streams: first token after 50 ms, "
        "then one per 20 ms; times in ms; gateway cells: value (ms added, ratio) against direct)",
        "",
        table(summary),
        "",
        targets(summary),
        *compare.report(summary),
        "",
        "Failures: " + ("none" if not failures else "\n" + "\n".join(failures)),
        *([f"\nThe gateway was stopped from outside {summary['restarts']} time(s) during the run; "
           "it was restarted and the scenario run again."] if summary.get("restarts") else []),
        "",
        "CPU use during the rounds (% of one core, averaged over the round's wall time):",
        "",
        *load,
    ])


def _gateway_rounds(summary):
    """(scenario, title, figures) of each gateway measured: the current one, and the base."""
    for scenario in summary["scenarios"]:
        yield scenario, scenario["title"], scenario["gateway"]
        if "base" in scenario:
            yield scenario, f"{scenario['title']}, base {summary['base']['short']}", scenario["base"]


def revision():
    try:
        rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        return f"commit {rev}" if rev else "an unknown revision"
    except (OSError, subprocess.SubprocessError):
        return "an unknown revision"


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about one minute: short rounds, "
                        "one round per path")
    parser.add_argument("--scenarios", help="comma-separated, from: " + ", ".join(
                        s.key for s in SCENARIOS) + " (default: all; --quick: all but m2000)")
    parser.add_argument("--rounds", type=int, help="rounds per path (default 2, quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per round, overriding defaults")
    parser.add_argument("--workers", type=int, default=2, help="WEB_CONCURRENCY (default 2)")
    parser.add_argument("--profile", default="", help="scenarios whose gateway rounds are "
                        "recorded with py-spy (collapsed stacks in the results folder)")
    parser.add_argument("--native", action="store_true", help="py-spy --native: C frames too "
                        "(pauses the worker at each sample, so the figures suffer)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra gateway setting, e.g. --env KEEPALIVE=30")
    parser.add_argument("--out-dir", default=str(BENCH / "results"))
    parser.add_argument("--current-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the current gateway only (with --base HEAD: a "
                        "setting measured against the same commit without it)")
    parser.add_argument("--current-root", metavar="DIR", help="run the app.py and "
                        "gunicorn.conf.py of DIR as the current gateway, with this tree's "
                        "virtualenv (bench/floor: the cheapest relay on this stack)")
    parser.add_argument("--base", metavar="REF", help="also run the gateway of this git commit "
                        "(built in a temporary worktree, virtualenv cached under bench/.base) "
                        "and report every figure with the ratio current / base")
    args = parser.parse_args(argv)

    if args.scenarios is None:
        args.scenarios = ",".join(s.key for s in SCENARIOS if not (args.quick and s.key == "m2000"))
    keys = [k.strip() for k in args.scenarios.split(",") if k.strip()]
    known = {s.key: s for s in SCENARIOS}
    unknown = [k for k in keys if k not in known]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {list(known)}")
    rounds = args.rounds or (1 if args.quick else 2)
    if not 1 <= rounds <= 10:
        parser.error("--rounds must be 1..10")
    if args.duration is not None and not 0 < args.duration <= 300:
        parser.error("--duration must be in (0, 300] seconds")
    current_root = Path(args.current_root).resolve() if args.current_root else ROOT
    if not (current_root / "app.py").is_file():
        parser.error(f"--current-root: no app.py in {current_root}")
    if current_root != ROOT and any(known[k].limited for k in keys):
        parser.error("the limited scenarios need the gateway's own key store: not with "
                     "--current-root")
    extra_env = dict(item.split("=", 1) for item in args.env)
    current_env = {**extra_env, **dict(item.split("=", 1) for item in args.current_env)}

    fds = raise_fd_limit()
    if fds < 9000 and any(known[k].clients >= 2000 for k in keys):
        print(f"warning: only {fds} file descriptors; 2,000 streams need about 9,000",
              file=sys.stderr)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out_dir) / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    given = list(sys.argv[1:] if argv is None else argv)
    command = _command(given)

    fake = gateway = None
    warm = Scenario("warm", "warm-up", True, 40, 1, 1, 400)
    summary = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "revision": revision(), "command": command, "rounds": rounds,
               "environment": {"cores": os.cpu_count(), "cpu": cpu_model(),
                               "python": platform.python_version(), "workers": args.workers,
                               "fd_limit": fds, "gateway_env": current_env,
                               **({"current_root": str(current_root)}
                                  if current_root != ROOT else {}),
                               **({"base_env": extra_env} if args.base else {})},
               "scenarios": []}
    started = time.monotonic()
    ctx = None
    base = compare.BaseBuild(args.base, log=lambda text: print(text, flush=True)).open() \
        if args.base else None
    try:
        fake, fake_port = start_fake(python, out_dir)
        limited_key = (create_limited_key(python, out_dir)
                       if any(known[k].limited for k in keys) else None)
        gateway, gateway_port = start_gateway(python, fake_port, args.workers, out_dir,
                                              current_env, root=current_root)
        ctx = {"python": python, "fake": fake, "fake_port": fake_port, "gateway": gateway,
               "limited_key": limited_key,
               "gateway_port": gateway_port, "gateway_python": python, "gateway_root": current_root,
               "gateway_env": current_env, "base_env": extra_env,
               "out_dir": out_dir,
               "profile": {k.strip() for k in args.profile.split(",") if k.strip()},
               "native": args.native}
        if args.base:
            start_base(ctx, base, args.workers, extra_env, summary)
        print(f"fake upstream on :{fake_port}, gateway on :{gateway_port} "
              f"(workers {children(gateway.pid)}); results in {out_dir}", flush=True)
        # Warm-up, not recorded: imports, connection pools, both workers.
        for target in ctx.get("paths", ("direct", "gateway")):
            one_round(ctx, warm, target, 1.5, 0, 10_000_000)
        seed = 0
        for scenario in (known[k] for k in keys):
            duration = args.duration or (scenario.quick if args.quick else scenario.duration)
            for attempt in (1, 2):
                try:
                    results, seed = run_scenario(ctx, scenario, duration, rounds, seed)
                    break
                except GatewayDied as died:
                    # Not the benchmark's doing (the gateway never exits on its own here):
                    # say so, start a fresh gateway and run the scenario once more.
                    print(f"  {died}; restarting it and running {scenario.key} again",
                          flush=True)
                    summary["restarts"] = summary.get("restarts", 0) + 1
                    name = died.name
                    stop(ctx[name], timeout=5)
                    ctx[name], ctx[f"{name}_port"] = start_gateway(
                        ctx[f"{name}_python"], fake_port, args.workers, out_dir,
                        ctx[f"{name}_env"],
                        log_name=f"{name}-{summary['restarts']}.log", root=ctx[f"{name}_root"],
                        name=name)
                    gateway = ctx["gateway"]
                    one_round(ctx, warm, name, 1.5, 0, 10_000_000)
                    if attempt == 2:
                        raise SystemExit(
                            f"the gateway died twice during {scenario.key}") from None
            summary["scenarios"].append({
                "key": scenario.key, "title": scenario.title, "stream": scenario.stream,
                "clients": scenario.clients, "duration": duration,
                **{path: merge(rounds_of_path) for path, rounds_of_path in results.items()}})
    finally:
        stop(ctx["gateway"] if ctx else gateway, timeout=40)
        if ctx and ctx.get("base"):
            stop(ctx["base"], timeout=40)
        stop(fake)
        if base is not None:
            base.close()
    summary["elapsed"] = time.monotonic() - started
    text = report(summary)
    print()
    print(text)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    pictures = plots.write_plots(out_dir, summary)
    if pictures:
        text += "\n\nPlots next to this table: " + ", ".join(p.name for p in pictures) + "\n"
    (out_dir / "RESULTS.md").write_text(text + "\n")
    latest = Path(args.out_dir) / "latest.md"
    latest.write_text(text + "\n")
    for picture in pictures:  # results/latest-<name>.png, next to latest.md
        shutil.copyfile(picture, Path(args.out_dir) / f"latest-{picture.name}")
    print(f"\nwritten: {out_dir / 'RESULTS.md'} (and {latest}), plots "
          f"{', '.join(p.name for p in pictures) or 'none'}; took {summary['elapsed']:.0f} s")


def start_base(ctx, base, workers, extra_env, summary):
    """--base: the other commit's gateway, next to the current one on the same fake."""
    ctx["base"], ctx["base_port"] = start_gateway(
        str(base.python), ctx["fake_port"], workers, ctx["out_dir"], extra_env, root=base.root,
        name="base")
    ctx["base_python"], ctx["base_root"] = str(base.python), base.root
    ctx["paths"] = ("direct", "gateway", "base")
    summary["base"] = {"ref": base.ref, "commit": base.commit, "short": base.short}
    print(f"base gateway ({base.short}) on :{ctx['base_port']}", flush=True)


def _command(given):
    """How this run was started, in the words of the Makefile when it was `make bench...`."""
    rest, base = list(given), None
    if "--base" in rest and rest.index("--base") + 1 < len(rest):
        at = rest.index("--base")
        base = rest[at + 1]
        del rest[at:at + 2]
    make = {(): "make bench", ("--quick",): "make bench-quick"}.get(tuple(rest))
    if make:
        return f"{make} BASE={base}" if base else make
    return "python bench/run.py " + " ".join(given)


if __name__ == "__main__":
    main()
