"""PNG plots of one benchmark run, written next to its table.

`run.py` calls `write_plots(out_dir, summary)` once the table is written; on its own,
`python bench/plots.py bench/results/<date>` redraws a finished run from its summary.json
and raw samples (raw-<scenario>-<path>-<round>.json, one figure per verified request).

- latency.png: the latency distribution of the non-stream scenarios, direct against
  gateway (share of requests per latency bin, log scale, p50 and p99 marked).
- streams.png: time to first token and whole-stream time at each concurrency, direct
  against gateway (box p25-p75, line p50, whiskers p1-p99).
- cpu.png: the gateway's CPU seconds per 1,000 streams at each concurrency, against the
  3 s target.

With `BASE=<ref>` (`--base`) the other commit's gateway is drawn too, as "base <commit>".

Every plot names the commit, the date and the command in its footer: figures from a
shared machine are noisy, and a picture should say where it came from.
"""
import json
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402 - comes with matplotlib
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

COLORS = {"direct": "#8a8f98", "gateway": "#f38020", "base": "#3b6ea8"}
CPU_TARGET = 3.0  # CPU s per 1,000 64-token streams, the target run.py checks
FILES = ("latency.png", "streams.png", "cpu.png")


def samples(out_dir, key, path, metric):
    """Every round's `metric` samples (ms) of one scenario and path."""
    values = []
    for raw in sorted(Path(out_dir).glob(f"raw-{key}-{path}-*.json")):
        values += json.loads(raw.read_text())[metric]
    return np.asarray(values, dtype=float)


def paths(summary):
    """The paths measured: direct, the gateway, and the base gateway with --base."""
    return ("direct", "gateway", "base") if summary.get("base") else ("direct", "gateway")


def label(summary, path):
    return f"base {summary['base']['short']}" if path == "base" else path


def footer(fig, summary, note=""):
    """Where the figures came from, wrapped to the figure's width."""
    env = summary["environment"]
    text = (f"{summary['revision']}, {summary['date'][:16]}, `{summary['command']}`, "
            f"{env['cores']} cores, gunicorn + gevent x{env['workers']}. {note}")
    width = int(fig.get_figwidth() * 17)  # characters of 7-point text per inch, roughly
    fig.text(0.01, 0.01, "\n".join(textwrap.wrap(text, width)), fontsize=7, color="#555555",
             ha="left", va="bottom")


def plain_log_axis(axis):
    """A log axis labelled 50, 100, 200, 500, 1,000 ... instead of powers of ten."""
    axis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1
                                           else f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def include_round_floor(ax):
    """Lower the y limit to the 1-2-5 tick below the data, so the lowest value has a label."""
    bottom = ax.get_ylim()[0]
    decade = 10 ** np.floor(np.log10(bottom))
    ax.set_ylim(bottom=decade * max(m for m in (1, 2, 5) if m * decade <= bottom))


def _clients(scenario):
    return f"{scenario['clients']:,} client" + ("s" if scenario["clients"] != 1 else "")


def plot_latency(out_dir, summary, target):
    """Non-stream latency histograms, one panel per scenario."""
    scenarios = [s for s in summary["scenarios"] if not s["stream"]]
    if not scenarios:
        return None
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5.2 * len(scenarios), 3.8),
                             squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        data = {path: samples(out_dir, scenario["key"], path, "latency")
                for path in paths(summary)}
        present = [v for v in data.values() if v.size]
        if not present:
            ax.set_axis_off()
            continue
        low = max(min(v.min() for v in present), 1e-3)
        high = max(v.max() for v in present)
        bins = np.geomspace(low, high * 1.001, 60)
        for path, values in data.items():
            if not values.size:
                continue
            weights = np.full(values.size, 100.0 / values.size)
            ax.hist(values, bins=bins, weights=weights, histtype="stepfilled", alpha=0.45,
                    color=COLORS[path], edgecolor=COLORS[path], linewidth=1.2,
                    label=f"{label(summary, path)}: p50 {np.percentile(values, 50):.2f}, "
                          f"p99 {np.percentile(values, 99):.2f} ms")
            for q, style in ((50, "-"), (99, ":")):
                ax.axvline(np.percentile(values, q), color=COLORS[path], linestyle=style,
                           linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("latency, ms (log scale; solid line p50, dotted p99)")
        ax.set_ylabel("% of requests")
        ax.set_title(f"non-stream, {_clients(scenario)}")
        ax.legend(fontsize=8, frameon=False)
        ax.grid(True, which="major", alpha=0.25)
    fig.suptitle("Non-stream latency: Workers AI fake called directly vs through the gateway")
    footer(fig, summary, "Shared, busy machine: noisy figures.")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def _box(ax, data, positions, color, width):
    """Box p25-p75, line p50, whiskers p1-p99, no outliers drawn."""
    parts = ax.boxplot(data, positions=positions, widths=width, whis=(1, 99), showfliers=False,
                       patch_artist=True, manage_ticks=False)
    for box in parts["boxes"]:
        box.set(facecolor=color, alpha=0.55, edgecolor=color)
    for name in ("whiskers", "caps", "medians"):
        for line in parts[name]:
            line.set(color=color if name != "medians" else "#222222", linewidth=1.2)


def plot_streams(out_dir, summary, target):
    """TTFT and whole-stream time at each concurrency."""
    scenarios = [s for s in summary["scenarios"] if s["stream"]]
    if not scenarios:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = [s["title"].replace("stream, ", "").replace(" clients", "").replace(" client", "")
              .replace(", 1 token / 200 ms", "\n(slow tokens)") for s in scenarios]
    x = np.arange(len(scenarios))
    for ax, metric, title in ((axes[0], "ttft", "time to first token"),
                              (axes[1], "total", "whole stream (64 tokens)")):
        drawn = paths(summary)
        width = 0.76 / len(drawn)
        for n, path in enumerate(drawn):
            offset = (n - (len(drawn) - 1) / 2) * width
            data, where = [], []
            for i, scenario in enumerate(scenarios):
                values = samples(out_dir, scenario["key"], path, metric)
                if values.size:
                    data.append(values)
                    where.append(x[i] + offset)
            if data:
                _box(ax, data, where, COLORS[path], width * 0.9)
            ax.plot([], [], color=COLORS[path], linewidth=8, alpha=0.55,
                    label=label(summary, path))
        ax.set_yscale("log")
        include_round_floor(ax)
        plain_log_axis(ax.yaxis)
        ax.set_xticks(x, labels)
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel("ms (log scale)")
        ax.set_title(title)
        ax.grid(True, axis="y", which="both", alpha=0.2)
        ax.legend(fontsize=8, frameon=False, loc="upper left")
    fig.suptitle("Streams: direct vs through the gateway "
                 "(box p25-p75, line p50, whiskers p1-p99)")
    footer(fig, summary, "Upstream: first token after 50 ms, then one per 20 ms. "
                         "Shared, busy machine: noisy figures.")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def plot_cpu(out_dir, summary, target):
    """The gateway's CPU seconds per 1,000 streams at each concurrency."""
    rows = [s for s in summary["scenarios"]
            if s["stream"] and s["gateway"]["gateway_cpu_per_1k"] is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    labels = [s["title"].replace("stream, ", "").replace(", 1 token / 200 ms", "\n(slow tokens)")
              for s in rows]
    gateways = [p for p in paths(summary) if p != "direct"]
    width = 0.8 / len(gateways)
    x = np.arange(len(rows))
    for n, path in enumerate(gateways):
        values = [(s.get(path) or {}).get("gateway_cpu_per_1k") or 0.0 for s in rows]
        bars = ax.bar(x + (n - (len(gateways) - 1) / 2) * width, values, width * 0.95,
                      color=COLORS[path], alpha=0.8, label=label(summary, path))
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(x, labels)
    if len(gateways) > 1:
        ax.legend(fontsize=8, frameon=False)
    ax.axhline(CPU_TARGET, color="#333333", linestyle="--", linewidth=1)
    ax.text(-0.45, CPU_TARGET, f"target {CPU_TARGET:g} s (50+ clients)", va="bottom",
            ha="left", fontsize=8)
    ax.set_ylabel("gateway CPU seconds per 1,000 streams")
    ax.set_xlabel("concurrent streams")
    ax.set_title("Gateway CPU per 1,000 64-token streams\n(master + workers, user + system)")
    ax.grid(True, axis="y", alpha=0.25)
    footer(fig, summary, "At 1 client every event wakes an idle process.")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def write_plots(out_dir, summary):
    """Write every plot the run has data for into `out_dir`; return their paths."""
    out_dir = Path(out_dir)
    written = []
    for name, draw in zip(FILES, (plot_latency, plot_streams, plot_cpu)):
        path = draw(out_dir, summary, out_dir / name)
        if path:
            written.append(path)
    return written


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python bench/plots.py bench/results/<date>")
    out_dir = Path(args[0])
    summary = json.loads((out_dir / "summary.json").read_text())
    for path in write_plots(out_dir, summary):
        print(f"written: {path}")


if __name__ == "__main__":
    main()
