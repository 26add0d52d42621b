"""Gateway settings, read once from the environment (and an optional `.env`).

Every setting has an explicit default and a one-line comment; secrets have none.
The README documents each variable; tests subclass `Config` instead of touching
the environment.
"""
import os
from pathlib import Path

from dotenv import load_dotenv

load_dotenv()

ROOT = Path(__file__).resolve().parent


def _csv(value):
    """Split a comma-separated setting into its non-empty, stripped items."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _accounts(pool, account_id, token):
    """Parse `CLOUDFLARE_ACCOUNTS` ("id:token,id:token"); fall back to the single-account pair."""
    accounts = []
    for item in _csv(pool):
        account, _, secret = item.partition(":")
        if account.strip() and secret.strip():
            accounts.append((account.strip(), secret.strip()))
    if not accounts and account_id and token:
        accounts.append((account_id.strip(), token.strip()))
    return accounts


def _aliases(value):
    """Parse `MODEL_ALIASES` ("alias=model,alias=model") into {alias: model}, in order.

    Malformed items are kept as {item: ""} so that start-up can report them by name.
    """
    aliases = {}
    for item in _csv(value):
        alias, _, model = item.partition("=")
        aliases[alias.strip() or item] = model.strip()
    return aliases


def _env(name, default):
    """One environment variable, where an empty value means the default."""
    value = os.environ.get(name, "").strip()
    return value if value else default


def _flag(name, default):
    """An on/off setting: "0", "false", "no" and "off" (any case) mean off."""
    return _env(name, default).lower() not in ("0", "false", "no", "off")


class Config:
    """Settings for production; every value comes from the environment."""

    # Client keys the gateway accepts (API_KEY is the original Worker's name for it); no default.
    API_KEYS = _csv(os.environ.get("API_KEYS") or os.environ.get("API_KEY"))
    # Cloudflare account id and Workers AI API token for a pool of one account; no default.
    CLOUDFLARE_ACCOUNT_ID = os.environ.get("CLOUDFLARE_ACCOUNT_ID", "")
    CLOUDFLARE_API_TOKEN = os.environ.get("CLOUDFLARE_API_TOKEN", "")
    # Several accounts as "id:token,id:token"; when set it replaces the pair above.
    CLOUDFLARE_ACCOUNTS = _accounts(
        os.environ.get("CLOUDFLARE_ACCOUNTS"), CLOUDFLARE_ACCOUNT_ID, CLOUDFLARE_API_TOKEN
    )
    # Cloudflare API root; the only host the gateway ever calls.
    CLOUDFLARE_API_BASE = _env("CLOUDFLARE_API_BASE", "https://api.cloudflare.com/client/v4")
    # Allow-list of model names; empty means every catalogue model of the tasks the gateway serves.
    MODELS = _csv(os.environ.get("MODELS"))
    # Other names for models, "alias=model,...": accepted wherever a model name is, e.g.
    # gpt-4o-mini=@cf/meta/llama-3.1-8b-instruct.
    MODEL_ALIASES = _aliases(os.environ.get("MODEL_ALIASES"))
    # Origins allowed by CORS, comma-separated; "*" allows any.
    CORS_ORIGINS = _csv(_env("CORS_ORIGINS", "*"))
    # Most messages accepted in one chat request (OpenAI's own limit).
    MAX_MESSAGES = int(_env("MAX_MESSAGES", "2048"))
    # Most content parts accepted over all messages of one request.
    MAX_CONTENT_PARTS = int(_env("MAX_CONTENT_PARTS", "4096"))
    # Most characters accepted in a prompt or in all message contents together.
    MAX_INPUT_CHARS = int(_env("MAX_INPUT_CHARS", "131072"))
    # max_tokens sent upstream when the client sends none.
    DEFAULT_MAX_TOKENS = int(_env("DEFAULT_MAX_TOKENS", "256"))
    # Seconds the model catalogue is cached per worker.
    MODELS_CACHE_TTL = float(_env("MODELS_CACHE_TTL", "300"))
    # Largest request body in bytes (Flask answers 413 above it); audio uploads have their own.
    MAX_CONTENT_LENGTH = int(_env("MAX_BODY_BYTES", str(1024 * 1024)))
    # Largest audio upload for /v1/audio/transcriptions and /translations (OpenAI's own 25 MiB).
    AUDIO_MAX_BYTES = int(_env("AUDIO_MAX_BYTES", str(25 * 1024 * 1024)))
    # Most inputs one /v1/embeddings request may hold (OpenAI's own limit is 2048).
    EMBEDDINGS_MAX_INPUTS = int(_env("EMBEDDINGS_MAX_INPUTS", "2048"))
    # Upstream calls one request may have open at once (embedding batches, images of n > 1).
    UPSTREAM_FANOUT = int(_env("UPSTREAM_FANOUT", "4"))
    # CA bundle (file or folder) to verify Cloudflare's certificate; empty: certifi's bundle.
    UPSTREAM_CA_BUNDLE = os.environ.get("UPSTREAM_CA_BUNDLE", "")
    # Seconds to wait for a TCP connection to Cloudflare.
    UPSTREAM_CONNECT_TIMEOUT = float(_env("UPSTREAM_CONNECT_TIMEOUT", "5"))
    # Seconds of upstream silence tolerated between two bytes.
    UPSTREAM_READ_TIMEOUT = float(_env("UPSTREAM_READ_TIMEOUT", "60"))
    # Extra attempts after a transient upstream failure (connection error, 5xx, 3040, 408/3007).
    UPSTREAM_RETRIES = int(_env("UPSTREAM_RETRIES", "2"))
    # Longest Retry-After from Cloudflare the gateway waits for before retrying, in seconds.
    UPSTREAM_RETRY_AFTER_CAP = float(_env("UPSTREAM_RETRY_AFTER_CAP", "10"))
    # Largest non-stream answer read from Cloudflare, in bytes (larger ones: 502).
    UPSTREAM_MAX_BODY_BYTES = int(_env("UPSTREAM_MAX_BODY_BYTES", str(16 * 1024 * 1024)))
    # Seconds a whole non-stream request may take, retries included.
    UPSTREAM_TOTAL_TIMEOUT = float(_env("UPSTREAM_TOTAL_TIMEOUT", "300"))
    # Longest a stream may run, in seconds (kept below the OpenAI SDK's 600 s default timeout).
    STREAM_MAX_DURATION = float(_env("STREAM_MAX_DURATION", "540"))
    # Seconds of upstream silence before the client gets an SSE `: keep-alive` comment.
    STREAM_HEARTBEAT = float(_env("STREAM_HEARTBEAT", "15"))
    # Seconds a client has to send its whole request body (slower ones get 408).
    CLIENT_BODY_TIMEOUT = float(_env("CLIENT_BODY_TIMEOUT", "30"))
    # Seconds a client has to take each write of an answer before the gateway closes it.
    CLIENT_WRITE_TIMEOUT = float(_env("CLIENT_WRITE_TIMEOUT", "60"))
    # Seconds an account whose token Cloudflare refused stays out of the rotation.
    ACCOUNT_COOLDOWN = float(_env("ACCOUNT_COOLDOWN", "300"))
    # Gateway log level (debug, info, warning, error).
    LOG_LEVEL = _env("LOG_LEVEL", "info")
    # Log line format: "json" (one object per line) or "text".
    LOG_FORMAT = _env("LOG_FORMAT", "json").lower()
    # Bearer token that opens /metrics (and /readyz's reasons) from anywhere; empty: none.
    METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
    # Addresses or networks that may read /metrics (and /readyz's reasons) without the token.
    METRICS_ALLOW_IPS = _csv(_env("METRICS_ALLOW_IPS", "127.0.0.1,::1"))
    # Proxy hops in front of the gateway whose X-Forwarded-* headers are trusted (0: none).
    PROXY_HOPS = int(_env("PROXY_HOPS", "0"))
    # Addresses of the proxies allowed to set X-Forwarded-* ("*" for any), with PROXY_HOPS > 0.
    FORWARDED_ALLOW_IPS = _csv(_env("FORWARDED_ALLOW_IPS", "127.0.0.1,::1"))
    # Seconds a stored /v1/responses answer stays retrievable and chainable (30 days).
    RESPONSES_TTL = float(_env("RESPONSES_TTL", str(30 * 24 * 3600)))
    # Fetch http(s) image URLs of chat messages and inline them (1) or refuse them (0).
    IMAGE_FETCH = _env("IMAGE_FETCH", "0").lower() in ("1", "true", "yes", "on")
    # Largest image the gateway fetches, in bytes.
    IMAGE_FETCH_MAX_BYTES = int(_env("IMAGE_FETCH_MAX_BYTES", str(10 * 1024 * 1024)))
    # Seconds one image fetch may take in total.
    IMAGE_FETCH_TIMEOUT = float(_env("IMAGE_FETCH_TIMEOUT", "10"))
    # When set, the only hosts images are fetched from (they may be on private addresses).
    IMAGE_FETCH_ALLOW_HOSTS = _csv(os.environ.get("IMAGE_FETCH_ALLOW_HOSTS"))
    # Connections kept open to Cloudflare per worker (sized for concurrent streams).
    UPSTREAM_POOL_SIZE = int(_env("UPSTREAM_POOL_SIZE", "1000"))
    # Shared state (stored keys, their limits and usage, the account pool): an SQLite file
    # (exact across this host's workers) or redis://host:port/db (across hosts).
    STATE_URL = _env("STATE_URL", f"sqlite:///{ROOT / 'state' / 'gateway.db'}")
    # Seconds the gateway waits for the state store before serving without it.
    STATE_TIMEOUT = float(_env("STATE_TIMEOUT", "0.5"))
    # Serve the browser playground at / and /playground ("0" turns it off: 404).
    PLAYGROUND = _flag("PLAYGROUND", "1")
    # Bearer token of the admin API (/admin/keys, /admin/usage); empty: those routes answer 404.
    ADMIN_TOKEN = os.environ.get("ADMIN_TOKEN", "")
