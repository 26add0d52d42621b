"""`make bench BASE=<git ref>`: the gateway of another commit, measured in the same run.

Absolute times move 2-3x between machines of the same kind (and with whatever else a
shared machine runs); the ratio of two builds measured side by side on the same fake,
in alternating rounds, does not. So the driver (`run.py --base REF`) starts a second
gateway from REF next to the current one and runs every scenario against the fake
directly, the current gateway and the base gateway, rotating the order each round.

REF is checked out in a temporary git worktree (`bench/.base/<commit>/tree`, removed
when the run ends) and gets its own virtualenv from its own `requirements.txt`, cached
by commit (`bench/.base/<commit>/venv`, git-ignored), so the second run starts at once.
The base gateway is started exactly like the current one, `gunicorn -c gunicorn.conf.py
app:app` in its tree, so its module layout does not matter. The fake, the load
generator and this driver always come from the current tree.

This module holds what only the comparison needs: building the base, the order of the
paths per round, and the two tables (every figure of both builds with the ratio
current / base, and the issue's ratio targets).
"""
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CACHE = BENCH / ".base"
MIB = 1024 * 1024


def git(*args, cwd=ROOT, timeout=120):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=True).stdout.strip()


class BaseBuild:
    """The other commit, checked out (`open`, until `close`) and installed.

    `root` is its source tree, `python` the interpreter of its cached virtualenv.
    """

    def __init__(self, ref, cache=CACHE, log=print):
        try:
            self.commit = git("rev-parse", "--verify", f"{ref}^{{commit}}")
        except subprocess.CalledProcessError:
            raise SystemExit(f"BASE={ref} is not a commit of this repository") from None
        self.ref = ref
        self.short = self.commit[:7]
        self.folder = cache / self.commit
        self.root = self.folder / "tree"
        self.venv = self.folder / "venv"
        self.python = self.venv / "bin" / "python"
        self.log = log

    def open(self):
        """Check the commit out and make sure its virtualenv is ready; returns self."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._remove_checkout()  # a run that was killed may have left one behind
        git("worktree", "add", "--detach", "--force", str(self.root), self.commit)
        try:
            self._install()
        except BaseException:
            self._remove_checkout()
            raise
        return self

    def close(self):
        """Remove the checkout (the virtualenv stays, for the next run)."""
        self._remove_checkout()

    def _remove_checkout(self):
        if self.root.exists():
            try:
                git("worktree", "remove", "--force", str(self.root))
            except subprocess.CalledProcessError:
                shutil.rmtree(self.root, ignore_errors=True)
        git("worktree", "prune")

    def _install(self):
        """A virtualenv with the base's pinned requirements, rebuilt only when they change."""
        requirements = self.root / "requirements.txt"
        digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
        stamp = self.venv / ".installed"
        if stamp.exists() and stamp.read_text() == digest and self.python.exists():
            self.log(f"base {self.short}: cached virtualenv {self.venv}")
            return
        self.log(f"base {self.short}: installing its requirements into {self.venv} (once)")
        shutil.rmtree(self.venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True, timeout=300)
        subprocess.run([str(self.python), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", "-r", str(requirements)],
                       check=True, timeout=1200)
        stamp.write_text(digest)


def path_order(paths, rounds_run):
    """The order of the paths in a round: rotated by one every round (over all scenarios, so
    even one round per scenario rotates), so that no path always runs first or last."""
    shift = rounds_run % len(paths)
    return list(paths[shift:]) + list(paths[:shift])


# ---------------------------------------------------------------------------- report


def _ms(value):
    if value is None:
        return "–"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def _ratio(current, base):
    if current is None or base is None or base == 0:
        return "–"
    return f"{current / base:.2f}x"


def figures(scenario):
    """(name, direct, base, current, format) for every figure of one scenario."""
    d, b, c = scenario["direct"], scenario["base"], scenario["gateway"]
    rows = [("req/s", d["throughput"], b["throughput"], c["throughput"], "{:.0f}")]
    metrics = (("latency", "latency"),) if not scenario["stream"] else (
        ("ttft", "TTFT"), ("total", "stream"))
    for metric, label in metrics:
        for q in ("p50", "p99"):
            rows.append((f"{label} {q} (ms)", d[metric][q], b[metric][q], c[metric][q], "ms"))
        direct = d[metric]["p50"]
        if direct is not None:
            added = [None if x[metric]["p50"] is None else x[metric]["p50"] - direct
                     for x in (b, c)]
            rows.append((f"{label} p50 added to direct (ms)", None, *added, "{:+.2f}"))
            over = [None if x[metric]["p50"] is None else x[metric]["p50"] / direct
                    for x in (b, c)]
            rows.append((f"{label} p50 / direct", None, *over, "{:.3f}x"))
    rows += [
        ("gateway CPU s / 1k req", None, b["gateway_cpu_per_1k"], c["gateway_cpu_per_1k"],
         "{:.3f}"),
        ("of which in the kernel", None, _share(b), _share(c), "{:.0%}"),
        ("peak RSS / worker (MiB)", None, b["peak_rss_worker"] / MIB, c["peak_rss_worker"] / MIB,
         "{:.0f}"),
        ("peak RSS, all (MiB)", None, b["peak_rss_total"] / MIB, c["peak_rss_total"] / MIB,
         "{:.0f}"),
        ("most streams open at once at the fake", d["peak_streams"], b["peak_streams"],
         c["peak_streams"], "{:d}"),
        ("ok", d["ok"], b["ok"], c["ok"], "{:d}"),
        ("failed", d["failed"], b["failed"], c["failed"], "{:d}"),
    ]
    return rows


def _share(data):
    return data["gateway_sys"] / data["gateway_cpu"] if data["gateway_cpu"] else None


def _cell(value, fmt):
    if value is None:
        return "–"
    return _ms(value) if fmt == "ms" else fmt.format(value)


def comparison_table(summary):
    """Every figure of both builds, side by side, with the ratio current / base."""
    base = summary["base"]
    lines = [f"| scenario | figure | direct | base ({base['short']}) | current | current / base |",
             "|---|---|---|---|---|---|"]
    for scenario in summary["scenarios"]:
        if "base" not in scenario:
            continue
        for i, (name, d, b, c, fmt) in enumerate(figures(scenario)):
            ratio = "–" if fmt == "{:+.2f}" and (b is None or b <= 0) else _ratio(c, b)
            lines.append(f"| {scenario['title'] if i == 0 else ''} | {name} | {_cell(d, fmt)} | "
                         f"{_cell(b, fmt)} | {_cell(c, fmt)} | {ratio} |")
    return "\n".join(lines)


def ratio_targets(summary):
    """Issue 15's targets, as ratios of the two builds measured in this run."""
    by_key = {s["key"]: s for s in summary["scenarios"] if "base" in s}
    rows = ["| target | base | current | measured | |", "|---|---|---|---|---|"]

    def check(name, base, current, measured, met):
        verdict = "not measured" if met is None else "met" if met else "**missed**"
        rows.append(f"| {name} | {base} | {current} | {measured} | {verdict} |")

    if s := by_key.get("s500"):
        b, c = s["base"]["gateway_cpu_per_1k"], s["gateway"]["gateway_cpu_per_1k"]
        if b and c is not None:
            check("CPU per 1,000 streams at 500 clients ≤ 0.6x base", f"{b:.2f} s",
                  f"{c:.2f} s", f"{c / b:.2f}x", c / b <= 0.6)
        d = s["direct"]["total"]["p50"]
        b, c = s["base"]["total"]["p50"], s["gateway"]["total"]["p50"]
        if None not in (d, b, c):
            check("whole-stream p50 at 500 clients ≤ 1.10x direct", f"{b / d:.3f}x",
                  f"{c / d:.3f}x", f"{c / d:.3f}x", c / d <= 1.10)
    if s := by_key.get("ns50"):
        b, c = s["base"]["gateway_cpu_per_1k"], s["gateway"]["gateway_cpu_per_1k"]
        if b and c is not None:
            check("CPU per 1,000 non-stream requests at 50 clients ≤ 0.7x base", f"{b:.3f} s",
                  f"{c:.3f} s", f"{c / b:.2f}x", c / b <= 0.7)
    if s := by_key.get("ns1"):
        d = s["direct"]["latency"]["p50"]
        b, c = s["base"]["latency"]["p50"], s["gateway"]["latency"]["p50"]
        if None not in (d, b, c) and b > d:
            check("added p50 latency, one non-stream client ≤ 0.8x base", f"+{b - d:.3f} ms",
                  f"{c - d:+.3f} ms", f"{(c - d) / (b - d):.2f}x", (c - d) / (b - d) <= 0.8)
    failed = sum(s["gateway"]["failed"] for s in by_key.values())
    base_failed = sum(s["base"]["failed"] for s in by_key.values())
    if by_key:
        check("no failed or incorrect response, any scenario", str(base_failed), str(failed),
              f"{failed} failed", failed == 0)
    if s := by_key.get("m2000"):
        b, c = (s[p]["peak_rss_worker"] / MIB for p in ("base", "gateway"))
        held = s["gateway"]["peak_streams"]
        check("2,000 streams open: 0 failures, ≤ 100 MiB per worker", f"{b:.0f} MiB",
              f"{c:.0f} MiB", f"{c:.0f} MiB, {s['gateway']['failed']} failed, {held} streams "
              "open at once", (c <= 100 and s["gateway"]["failed"] == 0) if held >= 1900 else None)
    return "\n".join(rows)


def report(summary):
    """The comparison's part of the report (empty without --base)."""
    if not summary.get("base"):
        return []
    base = summary["base"]
    env = summary["environment"]
    settings = "" if env.get("gateway_env") == env.get("base_env") else (
        f" Settings: current {env.get('gateway_env')}, base {env.get('base_env')}.")
    return [
        "",
        f"Current ({summary['revision']}) against base {base['short']} ({base['ref']}), "
        f"measured in the same run, the paths' order rotated every round.{settings}",
        "",
        comparison_table(summary),
        "",
        ratio_targets(summary),
    ]
