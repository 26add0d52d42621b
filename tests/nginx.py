"""Run Debian's nginx in front of the test gateway, with `deploy/nginx.conf` as the site.

The site file is used as shipped, with only test values swapped in: the listen address,
the upstream port and (optionally) `proxy_read_timeout`. Each swap must hit exactly once,
so a change to the deploy file that the tests would no longer exercise fails loudly. The
site is wrapped in a minimal main config whose paths (pid, logs, temp dirs) all live in a
temp directory, so nothing under /etc/nginx or /var is read or written.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "deploy" / "nginx.conf"
PACKAGES = ("nginx-light", "nginx")  # Debian's small flavour first (bookworm); then the plain one
TEMP_MODULES = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def find_nginx():
    """The nginx binary, also when /usr/sbin is not on PATH."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_nginx():
    """nginx's path, installing Debian's package first when it is missing.

    Fails (never skips) with the installer's output when that is impossible, since the
    deploy config would otherwise ship untested.
    """
    found = find_nginx()
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        pytest.fail("nginx is not installed and cannot be installed here (needs root and "
                    "apt-get): run `apt-get install -y nginx-light` (or nginx) first.")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log = []

    def apt_get(*args):
        proc = subprocess.run([apt, "-q", "-y", *args], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=600)
        log.append(f"$ apt-get {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-3000:]}")
        return proc.returncode == 0

    apt_get("update")
    for package in PACKAGES:
        if apt_get("install", "--no-install-recommends", package) and find_nginx():
            return find_nginx()
    pytest.fail("nginx is not installed and installing it failed:\n" + "\n".join(log))


def _swap(text, pattern, replacement):
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise AssertionError(f"deploy/nginx.conf: expected exactly one match of {pattern!r}, "
                             f"found {count}; update tests/nginx.py with the config")
    return new


def render_site(listen_port, upstream_port, read_timeout=None, text=None):
    """deploy/nginx.conf for the test ports (and a short proxy_read_timeout if given)."""
    text = SITE.read_text() if text is None else text
    text = _swap(text, r"^(\s*)listen 80;", rf"\g<1>listen 127.0.0.1:{listen_port};")
    text = _swap(text, r"^(\s*)server 127\.0\.0\.1:8000;", rf"\g<1>server 127.0.0.1:{upstream_port};")
    if read_timeout is not None:
        text = _swap(text, r"^(\s*)proxy_read_timeout 600s;",
                     rf"\g<1>proxy_read_timeout {read_timeout}s;")
    return text


def compiled_without(nginx):
    """The modules this nginx build leaves out (`--without-http_X_module`)."""
    out = subprocess.run([nginx, "-V"], capture_output=True, text=True, check=True).stderr
    return set(re.findall(r"--without-http_(\w+)_module", out))


def main_config(folder, site_path, nginx):
    """A minimal nginx.conf around the site, with every path inside `folder`."""
    without = compiled_without(nginx)
    temps = []
    for module in TEMP_MODULES:
        if module == "client_body" or module not in without:
            (folder / f"{module}_temp").mkdir(exist_ok=True)
            temps.append(f"    {module}_temp_path {folder}/{module}_temp;")
    # As root the workers would switch to `nobody`, who cannot use the temp dirs above.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (f"{user}worker_processes 1;\npid {folder}/nginx.pid;\n"
            f"error_log {folder}/error.log info;\n"
            f"events {{ worker_connections 256; }}\n"
            f"http {{\n"
            f"    default_type application/octet-stream;\n"
            f"    access_log {folder}/access.log;\n"
            + "\n".join(temps) + "\n"
            f"    include {site_path};\n"
            f"}}\n")


def write_config(folder, site_text, nginx):
    """Write site.conf and nginx.conf into `folder`; return the main config's path."""
    folder.mkdir(parents=True, exist_ok=True)
    site_path = folder / "site.conf"
    site_path.write_text(site_text)
    conf = folder / "nginx.conf"
    conf.write_text(main_config(folder, site_path, nginx))
    return conf


def check_config(nginx, folder, conf):
    """`nginx -t` on the config: (ok, output)."""
    proc = subprocess.run([nginx, "-t", "-p", str(folder), "-e", str(folder / "error.log"),
                           "-c", str(conf)], capture_output=True, text=True, timeout=30)
    return proc.returncode == 0, proc.stdout + proc.stderr


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def run_nginx(nginx, folder, upstream_port, read_timeout=None):
    """nginx in the foreground with the rendered site; yield (base_url, folder)."""
    port = free_port()
    conf = write_config(folder, render_site(port, upstream_port, read_timeout), nginx)
    ok, output = check_config(nginx, folder, conf)
    assert ok, f"nginx -t refused the rendered config:\n{output}"
    with open(folder / "nginx.out", "wb") as out:
        process = subprocess.Popen([nginx, "-p", str(folder), "-e", str(folder / "error.log"),
                                    "-c", str(conf), "-g", "daemon off;"],
                                   stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited with {process.returncode}:\n"
                                   + (folder / "error.log").read_text(errors="replace"))
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start listening in time") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", folder
    finally:
        process.send_signal(signal.SIGTERM)  # fast shutdown: open streams are cut
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
