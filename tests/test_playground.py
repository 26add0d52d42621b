"""The playground page's serving rules: public, cached right, its own CSP, off with PLAYGROUND=0.

What the page does in a browser is tested with a real Chromium in tests/test_browser.py.
"""
import re
from html.parser import HTMLParser

import pytest

import config
from gateway.routes.playground import ASSET_VERSION, FILES
from tests.conftest import TestConfig
from tests.openai_spec import validate_error

HOOKS = ("api-key", "model-select", "prompt", "send", "stop", "answer", "error", "stats")
ASSETS = (("playground.js", "text/javascript"), ("playground.css", "text/css"),
          ("favicon.svg", "image/svg+xml"))


class PlaygroundOff(TestConfig):
    PLAYGROUND = False


class _Page(HTMLParser):
    """Collects data-testid hooks, linked URLs and inline scripts/styles of the page."""

    def __init__(self):
        super().__init__()
        self.hooks, self.urls, self.inline = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "data-testid" in attrs:
            self.hooks.append(attrs["data-testid"])
        for name in ("src", "href"):
            if name in attrs:
                self.urls.append(attrs[name])
        if "style" in attrs or any(name.startswith("on") for name in attrs):
            self.inline.append((tag, attrs))
        if tag == "style" or (tag == "script" and "src" not in attrs):
            self.inline.append((tag, attrs))


def parse(html):
    page = _Page()
    page.feed(html)
    return page


@pytest.mark.parametrize("path", ["/", "/playground", "/playground/"])
def test_page_needs_no_key_and_carries_its_policy(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "*" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-cache" in response.headers["Cache-Control"]
    assert response.headers["ETag"]


def test_page_has_every_hook_and_only_versioned_local_files(client):
    page = parse(client.get("/").get_data(as_text=True))
    assert sorted(page.hooks) == sorted(HOOKS)
    assert page.inline == [], "inline script or style would need 'unsafe-inline'"
    assert page.urls, "the page links its script and stylesheet"
    for url in page.urls:
        assert url.startswith("/playground/static/") and url.endswith(f"?v={ASSET_VERSION}")


def test_page_revalidates_with_its_etag(client):
    etag = client.get("/").headers["ETag"]
    assert client.get("/", headers={"If-None-Match": etag}).status_code == 304


@pytest.mark.parametrize("name,mimetype", ASSETS, ids=[name for name, _ in ASSETS])
def test_versioned_files_are_cached_for_a_year(client, name, mimetype):
    response = client.get(f"/playground/static/{name}?v={ASSET_VERSION}")
    assert response.status_code == 200
    assert response.mimetype == mimetype
    cache = response.headers["Cache-Control"]
    assert "max-age=31536000" in cache and "immutable" in cache and "public" in cache
    assert response.headers["Content-Security-Policy"]


@pytest.mark.parametrize("query", ["", "?v=stale"], ids=["unversioned", "old-version"])
def test_other_file_urls_are_revalidated(client, query):
    response = client.get(f"/playground/static/playground.js{query}")
    assert response.status_code == 200
    assert "no-cache" in response.headers["Cache-Control"]
    assert "max-age=31536000" not in response.headers["Cache-Control"]


@pytest.mark.parametrize("path", [
    "/playground/static/missing.js",
    "/playground/static/index.html",
    "/playground/static/../routes/playground.py",
    "/playground/static/%2e%2e/routes/playground.py",
], ids=["missing", "raw-index", "dotdot", "encoded-dotdot"])
def test_nothing_else_is_served(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("config_class", [PlaygroundOff])
@pytest.mark.parametrize("path", ["/", "/playground", f"/playground/static/playground.js?v={ASSET_VERSION}"],
                         ids=["root", "playground", "file"])
def test_playground_off_is_404(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
    assert "Content-Security-Policy" not in response.headers


@pytest.mark.parametrize("path,status", [("/v1/models", 401), ("/healthz", 200),
                                         ("/nowhere", 401)], ids=["api", "health", "unknown"])
def test_other_routes_keep_their_key_and_get_no_page_policy(client, path, status):
    response = client.get(path)
    assert response.status_code == status
    assert "Content-Security-Policy" not in response.headers


@pytest.mark.parametrize("config_class", [PlaygroundOff])
def test_playground_off_root_is_the_openai_404_also_with_a_key(client, auth):
    response = client.get("/", headers=auth)
    assert response.status_code == 404
    validate_error(response.get_json())
    assert response.get_json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("value,expected", [
    ("0", False), ("off", False), ("False", False), ("no", False), ("1", True), ("", True),
], ids=["zero", "off", "false", "no", "one", "empty"])
def test_playground_switch(monkeypatch, value, expected):
    monkeypatch.setenv("PLAYGROUND", value)
    assert config._flag("PLAYGROUND", "1") is expected


DANGEROUS = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|"
                       r"new Function|setAttribute\(\s*['\"]on")


def test_script_never_parses_text_as_html():
    """Model answers, model names and error messages reach the page as text only; the
    browser test proves it for an answer, this guards every other path in the script."""
    script = (FILES / "playground.js").read_text(encoding="utf-8")
    assert not DANGEROUS.findall(script)


@pytest.mark.parametrize("name", ["index.html", "playground.js", "playground.css"])
def test_files_load_nothing_from_another_host(name):
    text = (FILES / name).read_text(encoding="utf-8")
    assert not re.findall(r"(?:https?:)?//[\w.-]+\.\w+", text.replace("http://www.w3.org", ""))
    assert "@import" not in text and "url(" not in text
