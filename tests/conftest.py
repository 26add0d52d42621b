"""Shared fixtures: the app built with a test config, a client, keys, a mocked Cloudflare."""
import json
import logging
from pathlib import Path

import pytest
import responses

from config import Config
from gateway import create_app
from gateway.ops.request_log import JsonFormatter

DATA = Path(__file__).parent / "data"
API_BASE = "https://cf.test/client/v4"
ACCOUNT = "acct-test"
TOKEN = "cf-token-secret-123"
KEY = "sk-gateway-test-key"
RUN_URL = f"{API_BASE}/accounts/{ACCOUNT}/ai/run/"
SEARCH_URL = f"{API_BASE}/accounts/{ACCOUNT}/ai/models/search"
MODEL = "@cf/meta/llama-3.1-8b-instruct"


class TestConfig(Config):
    """Settings for unit tests: one account, one key, a Cloudflare that `responses` mocks."""

    TESTING = True
    API_KEYS = [KEY, "sk-second-key"]
    CLOUDFLARE_ACCOUNT_ID = ACCOUNT
    CLOUDFLARE_API_TOKEN = TOKEN
    CLOUDFLARE_ACCOUNTS = [(ACCOUNT, TOKEN)]
    CLOUDFLARE_API_BASE = API_BASE
    MODELS = [MODEL, "@cf/google/gemma-4-26b-a4b-it"]
    CORS_ORIGINS = ["*"]
    MAX_INPUT_CHARS = 131072
    DEFAULT_MAX_TOKENS = 256
    MODELS_CACHE_TTL = 300


class NoRetries(TestConfig):
    """One upstream attempt per request: tests of error mapping need no back-off."""

    UPSTREAM_RETRIES = 0


class NoAccount(TestConfig):
    """No Cloudflare credentials at all."""

    CLOUDFLARE_ACCOUNT_ID = ""
    CLOUDFLARE_API_TOKEN = ""
    CLOUDFLARE_ACCOUNTS = []


def load_data(name):
    """A canned upstream body from tests/data (parsed when it is JSON)."""
    text = (DATA / name).read_text(encoding="utf-8")
    return json.loads(text) if name.endswith(".json") else text


class _Capture(logging.Handler):
    """Keeps every formatted gateway log line of the whole test session."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(JsonFormatter().format(record))


@pytest.fixture(scope="session", autouse=True)
def gateway_logs():
    """Every log line the unit tests' requests produce holds no key and no token."""
    capture = _Capture()
    logger = logging.getLogger("gateway")
    logger.addHandler(capture)
    yield capture.lines
    logger.removeHandler(capture)
    text = "\n".join(capture.lines)
    if '"path"' not in text:
        return  # a selection of tests that made no request: nothing to check
    for secret in (KEY, "sk-second-key", TOKEN):
        assert secret not in text, "a key or token reached the gateway's logs"


@pytest.fixture
def config_class():
    return TestConfig


@pytest.fixture
def app(config_class):
    return create_app(config_class)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth():
    """Headers of an authenticated JSON request."""
    return {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def upstream():
    """A mocked Cloudflare: every call the gateway makes is recorded; unmocked calls fail."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


class Clock:
    """A settable clock for the code under test (`clock=Clock()`; move it with `.now`)."""

    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def cf_ok(result):
    """Cloudflare's success envelope around `result`."""
    return {"result": result, "success": True, "errors": [], "messages": []}


@pytest.fixture(autouse=True)
def _private_state(tmp_path, monkeypatch):
    """Each test's app keeps its state (keys, limits, the account pool) in its own temp file."""
    monkeypatch.setattr(TestConfig, "STATE_URL", f"sqlite:///{tmp_path}/state.db")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One real redis-server for the session (installed by apt-get when missing)."""
    from tests.redis_server import RedisServer
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path):
    """STATE_URL of an empty store of each kind: a temp SQLite file, or the test Redis."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    server = request.getfixturevalue("redis_server")
    server.flush()
    return server.url
