"""Summarise py-spy collapsed stacks (`py-spy record --format raw`): where a worker's CPU goes.

    python bench/profile_summary.py bench/results/<run>/profile-s500-*.txt [--top 25]

Prints, as % of all samples (py-spy samples only while Python code runs, so this is
the worker's busy time): self time per package (gateway, flask, werkzeug, gunicorn,
gevent, requests, urllib3, marshmallow, stdlib, ...), the functions with the most self
time, and the functions with the most inclusive time (themselves and what they call).
"""
import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*):(?P<line>\d+)\)$")
PACKAGES = ("gateway", "flask", "werkzeug", "gunicorn", "gevent", "requests", "urllib3",
            "marshmallow", "flask_cors", "orjson", "greenlet", "idna", "charset_normalizer",
            "certifi", "dotenv")
GATEWAY_FILES = ("schemas.py", "config.py", "app.py")


def package(path):
    if not path:
        return "native"
    first = path.split("/", 1)[0]
    if first in PACKAGES:
        return first
    if path in GATEWAY_FILES:
        return "gateway"
    if "/" not in path or first in ("http", "email", "json", "logging", "concurrent", "asyncio",
                                    "importlib", "urllib", "encodings", "collections"):
        return "stdlib"
    return first


def parse(paths):
    stacks = Counter()
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                stacks[stack] += int(count)
    return stacks


def split(frame):
    match = FRAME.match(frame)
    if not match:
        return frame, ""
    return match["func"], match["file"]


def summarise(stacks, top):
    total = sum(stacks.values()) or 1
    by_package, self_time, inclusive = Counter(), Counter(), Counter()
    for stack, count in stacks.items():
        frames = stack.split(";")
        func, path = split(frames[-1])
        by_package[package(path)] += count
        self_time[f"{func} ({path})"] += count
        seen = set()
        for frame in frames:
            func, path = split(frame)
            name = f"{func} ({path.rsplit(':', 1)[0]})"
            if name not in seen:
                seen.add(name)
                inclusive[name] += count
    lines = [f"{total} samples", "", "self time by package:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in by_package.most_common()]
    lines += ["", f"top {top} functions by self time:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in self_time.most_common(top)]
    lines += ["", f"top {top} functions by inclusive time:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summarise(parse(args.files), args.top))


if __name__ == "__main__":
    main()
