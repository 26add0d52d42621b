"""The gateway app in-process (Flask's test client) against the fake Workers AI, for route tests.

The media routes' unit tests use the real fake server rather than mocks: its recorded
requests show exactly what went upstream (or that nothing did), in the real wire formats.
"""
from config import Config
from gateway import create_app
from tests.fake_workers_ai import FakeWorkersAI
from tests.openai_spec import validate_error

KEY = "sk-media-unit-key"
ACCOUNT, TOKEN = "acct-media", "cf-media-token-5f1a"


def media_config(fake, **settings):
    """A Config class pointing at `fake`, every catalogue model allowed, one account."""
    values = {"TESTING": True, "API_KEYS": [KEY], "CLOUDFLARE_ACCOUNTS": [(ACCOUNT, TOKEN)],
              "CLOUDFLARE_API_BASE": fake.base_url, "MODELS": [], "UPSTREAM_RETRIES": 0,
              "MODEL_ALIASES": {}, **settings}
    return type("MediaConfig", (Config,), values)


def start_fake():
    return FakeWorkersAI(accounts={ACCOUNT: TOKEN}).start()


def media_client(fake, **settings):
    return create_app(media_config(fake, **settings)).test_client()


def run_requests(fake):
    """The /ai/run calls the fake received."""
    return [r for r in fake.requests if "/ai/run/" in r.path]


def assert_refused(rv, fake, param):
    """A 400 in OpenAI's error envelope naming `param`, and nothing sent to Workers AI."""
    assert rv.status_code == 400, rv.get_data(as_text=True)
    validate_error(rv.get_json())
    assert rv.get_json()["error"]["param"] == param
    assert run_requests(fake) == []


AUTH = {"Authorization": f"Bearer {KEY}"}
