"""A real headless Chromium for the browser tests: Debian's `chromium` + `chromium-driver`,
driven by selenium.

Both packages are installed from Debian's registry when missing (as tests/nginx.py does for
nginx), and the tests fail, never skip, when that is impossible: the playground and CORS
would otherwise ship untested in a browser. selenium is given the driver and the browser
explicitly, so its own manager never tries to download either.
"""
import http.server
import os
import shutil
import subprocess
import threading
from contextlib import contextmanager

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

PACKAGES = ("chromium", "chromium-driver")
# The real binary first: Debian's /usr/bin/chromium is a shell wrapper around it.
BROWSERS = ("/usr/lib/chromium/chromium", "chromium", "/usr/bin/chromium")
DRIVERS = ("chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _first(candidates):
    for candidate in candidates:
        found = shutil.which(candidate) or (candidate if os.access(candidate, os.X_OK) else None)
        if found:
            return found
    return None


def find_chromium():
    """(browser, driver) paths, or None for what is missing."""
    return _first(BROWSERS), _first(DRIVERS)


def ensure_chromium():
    """The browser's and the driver's paths, installing Debian's packages first if needed."""
    browser, driver = find_chromium()
    if browser and driver:
        return browser, driver
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        pytest.fail("chromium and chromium-driver are not installed and cannot be installed "
                    "here (needs root and apt-get): run `apt-get install -y chromium "
                    "chromium-driver` first.")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log = []
    for args in (["update"], ["install", "-y", "-o", "DPkg::Lock::Timeout=600", *PACKAGES]):
        proc = subprocess.run([apt, "-q", *args], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=1200)
        log.append(f"$ apt-get {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-3000:]}")
    browser, driver = find_chromium()
    if browser and driver:
        return browser, driver
    pytest.fail("installing chromium and chromium-driver failed:\n" + "\n".join(log))


def start_chrome(browser, driver, width=1100, height=1250):
    """A headless Chromium session that keeps the page's console log for `get_log`."""
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--no-first-run", "--disable-extensions", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--password-store=basic",
                 f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    session.set_page_load_timeout(60)
    session.set_script_timeout(90)
    return session


class _OnePage(http.server.BaseHTTPRequestHandler):
    """Serves `server.page` at every path (the 'other site' of the CORS tests)."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        body = self.server.page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass


@contextmanager
def serve_page(html):
    """A tiny HTTP server on 127.0.0.1 (its own port, so its own origin); yield its origin."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OnePage)
    server.page = html
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
