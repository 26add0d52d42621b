"""Run Debian's redis-server for the tests: a private instance on a free port.

Installed with apt-get when missing (as tests/nginx.py does for nginx): the Redis store
is tested against the real server, never a mock. Each instance lives in a temp folder
with an append-only file, so a test can kill it (SIGKILL) and start it again on the same
port with its data, as a restarted production Redis would have.
"""
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

PACKAGE = "redis-server"


def find_redis():
    """The redis-server binary, also when /usr/bin is not on PATH."""
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None


def ensure_redis():
    """redis-server's path, installing Debian's package first when it is missing.

    Fails (never skips) with the installer's output when that is impossible: the Redis
    store would otherwise ship untested.
    """
    found = find_redis()
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        pytest.fail("redis-server is not installed and cannot be installed here (needs root "
                    "and apt-get): run `apt-get install -y redis-server` first.")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log = []
    for args in (["update"], ["install", "-y", "-o", "DPkg::Lock::Timeout=600",
                              "--no-install-recommends", PACKAGE]):
        proc = subprocess.run([apt, "-q", *args], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=900)
        log.append(f"$ apt-get {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-3000:]}")
    found = find_redis()
    if not found:
        pytest.fail("redis-server is not installed and installing it failed:\n" + "\n".join(log))
    return found


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One redis-server process; `url`, `kill()`, `start()`, `flush()`."""

    def __init__(self, folder, binary=None):
        self.binary = binary or ensure_redis()
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--daemonize", "no", "--protected-mode", "no",
                "--logfile", str(self.folder / "redis.log")]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not self._answers():
            if self.process.poll() is not None:
                log = (self.folder / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{log}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING in time")
            time.sleep(0.05)
        return self

    def _answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self):
        """SIGKILL: the server vanishes as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def flush(self):
        """Empty the database (between tests sharing one server)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            assert sock.recv(16).startswith(b"+OK")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
