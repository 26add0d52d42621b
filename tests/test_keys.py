"""Stored client keys end to end inside the app (gateway/state/keys.py, guard.py, auth.py,
routes/admin.py, state/cli.py): one behavioural suite on both stores.

Cloudflare is mocked with `responses`; the store is a temp SQLite file or the real Redis
the session fixture runs. The gunicorn-level checks (exactness across workers and hosts,
the pool, Redis killed mid-run) are in test_keys_e2e.py.
"""
import io
import time

import pytest
import responses
from flask import g

from gateway import create_app
from gateway.state.keys import create_key, digest
from tests.conftest import KEY, MODEL, RUN_URL, SEARCH_URL, TestConfig, cf_ok, load_data
from tests.openai_spec import validate_error

ADMIN = "admin-token-for-tests-0123"
GEMMA = "@cf/google/gemma-4-26b-a4b-it"
CHAT = "/v1/chat/completions"
RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")


@pytest.fixture
def app(store_url):
    class Config(TestConfig):
        STATE_URL = store_url
        ADMIN_TOKEN = ADMIN
    return create_app(Config)


@pytest.fixture
def store(app):
    return app.extensions["state"]


@pytest.fixture
def admin(client):
    """POST/GET/DELETE on the admin API with the admin token."""
    headers = {"Authorization": f"Bearer {ADMIN}"}

    class Admin:
        def create(self, **fields):
            rv = client.post("/admin/keys", json=fields, headers=headers)
            assert rv.status_code == 201, rv.get_data(as_text=True)
            return rv.get_json()

        def get(self, path):
            return client.get(path, headers=headers)

        def delete(self, path):
            return client.delete(path, headers=headers)
    return Admin()


@pytest.fixture
def cloudflare(upstream):
    """Cloudflare answers every chat with 7 prompt and 5 completion tokens."""
    usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    upstream.add(responses.GET, SEARCH_URL, json=load_data("cf_models_search_page1.json"))
    for model in (MODEL, GEMMA):
        upstream.add(responses.POST, RUN_URL + model,
                     json=cf_ok({"response": "hi there", "usage": usage}))
    return upstream


def chat(client, key, model=MODEL, **extra):
    """One chat request, read and closed: closing ends it, which settles its usage."""
    body = {"model": model, "messages": [{"role": "user", "content": "Hello"}], **extra}
    rv = client.post(CHAT, json=body, headers={"Authorization": f"Bearer {key}"})
    rv.get_data()
    rv.close()
    return rv


# -- admin API --------------------------------------------------------------------------------

def test_admin_routes_are_404_without_admin_token(store_url):
    class Config(TestConfig):
        STATE_URL = store_url
        ADMIN_TOKEN = ""
    client = create_app(Config).test_client()
    for method, path in [("post", "/admin/keys"), ("get", "/admin/keys"),
                         ("delete", "/admin/keys/x"), ("get", "/admin/usage"),
                         ("put", "/admin/keys")]:
        rv = getattr(client, method)(path, json={"name": "x"},
                                     headers={"Authorization": f"Bearer {KEY}"})
        assert rv.status_code == 404, (method, path)
        validate_error(rv.get_json())


@pytest.mark.parametrize("authorization", [
    pytest.param(None, id="none"),
    pytest.param(f"Bearer {ADMIN}x", id="wrong"),
    pytest.param(f"Basic {ADMIN}", id="other-scheme"),
    pytest.param(f"Bearer {KEY}", id="api-keys-key"),
    pytest.param("stored", id="stored-key"),
])
def test_admin_routes_refuse_anything_but_the_admin_token(client, admin, authorization):
    if authorization == "stored":
        authorization = f"Bearer {admin.create(name='someone')['key']}"
    headers = {"Authorization": authorization} if authorization else {}
    for rv in (client.get("/admin/keys", headers=headers),
               client.post("/admin/keys", json={"name": "intruder"}, headers=headers),
               client.delete("/admin/keys/someone", headers=headers),
               client.get("/admin/usage", headers=headers)):
        assert rv.status_code == 401
        validate_error(rv.get_json())
        assert ADMIN not in rv.get_data(as_text=True)
    assert [k["name"] for k in admin.get("/admin/keys").get_json()["data"]] in ([], ["someone"])


def test_admin_api_round_trip(client, admin, store):
    created = admin.create(name="alice", models=["@cf/meta/*"], rpm=10, tpm=1000,
                           max_parallel=2, daily_tokens=50000, expires_in=3600)
    secret = created.pop("key")
    assert secret.startswith("sk-cf-") and len(secret) >= 46
    assert created["name"] == "alice" and created["models"] == ["@cf/meta/*"]
    assert (created["rpm"], created["tpm"], created["max_parallel"],
            created["daily_tokens"]) == (10, 1000, 2, 50000)
    assert created["expires_at"] - created["created_at"] == 3600
    listed = admin.get("/admin/keys").get_json()
    assert listed["object"] == "list" and [k["name"] for k in listed["data"]] == ["alice"]
    assert secret not in str(listed) and digest(secret) not in str(listed)
    rv = client.post("/admin/keys", json={"name": "alice"},
                     headers={"Authorization": f"Bearer {ADMIN}"})
    assert rv.status_code == 409 and rv.get_json()["error"]["param"] == "name"
    gone = admin.delete("/admin/keys/alice")
    assert gone.status_code == 200 and gone.get_json()["name"] == "alice"
    assert admin.delete("/admin/keys/alice").status_code == 404
    assert admin.get("/admin/keys").get_json()["data"] == []


@pytest.mark.parametrize("body, param", [
    pytest.param({}, "name", id="no-name"),
    pytest.param({"name": ""}, "name", id="empty-name"),
    pytest.param({"name": "has space"}, "name", id="space-in-name"),
    pytest.param({"name": "a" * 65}, "name", id="long-name"),
    pytest.param({"name": "x", "rpm": 0}, "rpm", id="zero-rpm"),
    pytest.param({"name": "x", "tpm": "100"}, "tpm", id="string-tpm"),
    pytest.param({"name": "x", "max_parallel": 1.5}, "max_parallel", id="float-parallel"),
    pytest.param({"name": "x", "daily_tokens": True}, "daily_tokens", id="bool-budget"),
    pytest.param({"name": "x", "expires_in": -5}, "expires_in", id="negative-expiry"),
    pytest.param({"name": "x", "models": "@cf/meta/*"}, "models", id="models-not-list"),
    pytest.param({"name": "x", "models": [""]}, "models[0]", id="empty-pattern"),
    pytest.param({"name": "x", "admin": True}, "admin", id="unknown-field"),
    pytest.param({"name": "x", "daily_tokens": 2**63}, "daily_tokens", id="budget-2^63"),
    pytest.param({"name": "x", "daily_tokens": 2**53}, "daily_tokens", id="budget-2^53"),
    pytest.param({"name": "x", "rpm": 2**63}, "rpm", id="rpm-2^63"),
    pytest.param({"name": "x", "tpm": 2**53}, "tpm", id="tpm-2^53"),
    pytest.param({"name": "x", "max_parallel": 2**64 - 1}, "max_parallel", id="parallel-2^64"),
    pytest.param({"name": "x", "expires_in": 2**63}, "expires_in", id="expiry-2^63"),
])
def test_admin_create_refuses_bad_fields(client, admin, body, param):
    rv = client.post("/admin/keys", json=body, headers={"Authorization": f"Bearer {ADMIN}"})
    assert rv.status_code == 400
    validate_error(rv.get_json())
    assert rv.get_json()["error"]["param"] == param
    assert admin.get("/admin/keys").get_json()["data"] == []


def test_limits_up_to_2_53_minus_1_are_kept_exactly(client, admin, cloudflare):
    """The largest limit the stores and Redis' Lua numbers hold exactly works end to end."""
    top = 2**53 - 1
    created = admin.create(name="roomy", rpm=top, tpm=top, max_parallel=top, daily_tokens=top,
                           expires_in=100 * 365 * 86400)
    assert (created["rpm"], created["daily_tokens"]) == (top, top)
    rv = chat(client, created["key"])  # estimate: 5 chars / 4 -> 2, + DEFAULT_MAX_TOKENS 256
    assert rv.status_code == 200
    assert rv.headers["x-ratelimit-limit-tokens"] == str(top)
    assert rv.headers["x-ratelimit-remaining-tokens"] == str(top - 258)
    assert rv.headers["x-ratelimit-remaining-requests"] == str(top - 1)


# -- using a stored key -----------------------------------------------------------------------

def test_created_key_works_and_is_stored_hashed(client, admin, store, store_url, cloudflare,
                                                tmp_path):
    secret = admin.create(name="bob")["key"]
    rv = chat(client, secret)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    assert not any(h in rv.headers for h in RATE_HEADERS), "an unlimited key has no limits"
    assert secret not in str(admin.get("/admin/keys").get_json())
    assert store.find_key(digest(secret))["name"] == "bob"
    if store_url.startswith("sqlite"):
        dump = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    else:
        import redis
        r = redis.Redis.from_url(store_url)
        dump = b"".join(k + (r.dump(k) or b"") for k in r.scan_iter("*"))
    assert digest(secret).encode() in dump, "the dump holds the store's data"
    assert secret.encode() not in dump and secret[6:].encode() not in dump


def test_unknown_and_revoked_keys_get_401(client, admin, cloudflare):
    secret = admin.create(name="carol")["key"]
    assert chat(client, secret).status_code == 200
    assert chat(client, secret[:-1] + ("A" if secret[-1] != "A" else "B")).status_code == 401
    admin.delete("/admin/keys/carol")
    for rv in (chat(client, secret), client.get("/v1/models",
                                                headers={"Authorization": f"Bearer {secret}"})):
        assert rv.status_code == 401 and rv.get_json()["error"]["code"] == "invalid_api_key"
    assert len(cloudflare.calls) == 1


def test_expired_key_gets_401(client, store, cloudflare):
    secret, _ = create_key(store, {"name": "old", "expires_in": 60}, now=time.time() - 61)
    rv = chat(client, secret)
    assert rv.status_code == 401 and "expired" in rv.get_json()["error"]["message"]
    fresh, _ = create_key(store, {"name": "new", "expires_in": 60})
    assert chat(client, fresh).status_code == 200
    assert len(cloudflare.calls) == 1


def test_model_patterns(client, admin, cloudflare):
    secret = admin.create(name="meta-only", models=["@cf/meta/*"])["key"]
    auth = {"Authorization": f"Bearer {secret}"}
    assert chat(client, secret).status_code == 200
    rv = chat(client, secret, model=GEMMA)
    assert rv.status_code == 404 and rv.get_json()["error"]["code"] == "model_not_found"
    assert rv.get_json()["error"]["param"] == "model"
    assert [m["id"] for m in client.get("/v1/models", headers=auth).get_json()["data"]] == [MODEL]
    assert client.get(f"/v1/models/{GEMMA}", headers=auth).status_code == 404
    assert [c.request.method for c in cloudflare.calls].count("POST") == 1, \
        "nothing upstream for the refused model"
    everything = client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert {m["id"] for m in everything.get_json()["data"]} == {MODEL, GEMMA}


def test_rpm_refusal_is_openais_429_with_headers(client, admin, cloudflare):
    secret = admin.create(name="slow", rpm=2, tpm=100000)["key"]
    first = chat(client, secret)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert chat(client, secret).headers["x-ratelimit-remaining-requests"] == "0"
    refused = chat(client, secret)
    assert refused.status_code == 429
    validate_error(refused.get_json())
    error = refused.get_json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert all(h in refused.headers for h in RATE_HEADERS)
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "x-should-retry" not in refused.headers
    assert len(cloudflare.calls) == 2
    assert chat(client, KEY).status_code == 200, "API_KEYS keys stay unlimited"


def test_tpm_trips_after_the_tokens_cloudflare_reported(client, admin, cloudflare):
    secret = admin.create(name="tokens", tpm=50)["key"]
    first = chat(client, secret, max_tokens=20)  # estimate: 5 chars / 4 -> 2, + 20
    assert first.status_code == 200
    assert first.headers["x-ratelimit-remaining-tokens"] == str(50 - 22)
    second = chat(client, secret, max_tokens=20)  # the window holds 12 (reported), + 22
    assert second.headers["x-ratelimit-remaining-tokens"] == str(50 - 12 - 22)
    third = chat(client, secret, max_tokens=20)  # 24 reported + 22 booked = 46 <= 50
    assert third.status_code == 200
    assert third.headers["x-ratelimit-remaining-tokens"] == str(50 - 24 - 22)
    refused = chat(client, secret, max_tokens=20)  # 36 reported + 22 > 50
    assert refused.status_code == 429 and refused.get_json()["error"]["type"] == "tokens"
    assert refused.headers["x-ratelimit-remaining-tokens"] == str(50 - 36)
    assert chat(client, secret, max_tokens=2).status_code == 200, "a smaller request fits"


def test_whole_answer_is_settled_before_it_is_sent(client, admin, cloudflare):
    """A client that sends its next request the moment it has read an answer finds that
    answer counted at Cloudflare's usage, not its estimate: the settlement does not wait
    for the response to be closed after its bytes went out."""
    secret = admin.create(name="settled-first", tpm=50)["key"]
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20}
    headers = {"Authorization": f"Bearer {secret}"}
    first = client.post(CHAT, json=body, headers=headers)  # read, not closed
    second = client.post(CHAT, json=body, headers=headers)
    assert second.headers["x-ratelimit-remaining-tokens"] == str(50 - 12 - 22)
    first.close()
    second.close()
    third = chat(client, secret, max_tokens=20)
    assert third.headers["x-ratelimit-remaining-tokens"] == str(50 - 24 - 22), "settled once"


def test_daily_budget_answers_insufficient_quota(client, admin, cloudflare):
    secret = admin.create(name="budget", daily_tokens=20)["key"]
    assert chat(client, secret).status_code == 200  # 12 tokens
    assert chat(client, secret).status_code == 200  # 24: over, the next is refused
    refused = chat(client, secret)
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "insufficient_quota"
    assert refused.headers["x-should-retry"] == "false"
    usage = admin.get("/admin/usage?name=budget&days=1").get_json()
    assert usage["data"] == [{"name": "budget", "date": time.strftime("%Y-%m-%d", time.gmtime()),
                              "model": MODEL, "requests": 2, "prompt_tokens": 14,
                              "completion_tokens": 10}]


@pytest.mark.parametrize("stored", [True, False], ids=["stored-key", "api-keys-key"])
def test_an_open_stream_keeps_no_copy_of_the_request_body(app, client, admin, upstream, stored):
    """The request context lives as long as its stream: once the payload went upstream it
    holds neither the raw body nor the one the per-key check parsed (a long conversation
    would otherwise be kept per open stream)."""
    held = []
    app.after_request(lambda response: held.append((g.get("raw_body"), g.get("json_body")))
                      or response)
    upstream.add(responses.POST, RUN_URL + MODEL, body=load_data("cf_stream_classic.sse"),
                 content_type="text/event-stream")
    key = admin.create(name="streamer")["key"] if stored else KEY
    rv = client.post(CHAT, json={"model": MODEL, "stream": True,
                                 "messages": [{"role": "user", "content": "Hello " * 500}]},
                     headers={"Authorization": f"Bearer {key}"}, buffered=False)
    assert rv.status_code == 200
    assert held[-1] == (None, None)
    assert b"".join(rv.response).endswith(b"data: [DONE]\n\n")
    rv.close()


@pytest.mark.parametrize("query", ["days=0", "days=x", "days=401"])
def test_admin_usage_refuses_bad_days(admin, query):
    rv = admin.get(f"/admin/usage?{query}")
    assert rv.status_code == 400 and rv.get_json()["error"]["param"] == "days"


# -- store down -------------------------------------------------------------------------------

def test_store_down_degrades_never_500(client, admin, store, cloudflare):
    known = admin.create(name="known", rpm=1)["key"]
    unknown = admin.create(name="unknown", rpm=1)["key"]
    assert chat(client, known).status_code == 200
    store._down_until = time.monotonic() + 3600  # every call now raises StoreUnavailable
    assert [chat(client, known).status_code for _ in range(3)] == [200] * 3, "no limits"
    assert chat(client, KEY).status_code == 200
    rv = chat(client, unknown)
    assert rv.status_code == 503 and rv.headers["Retry-After"]
    assert admin.get("/admin/keys").status_code == 503
    store._down_until = 0.0
    assert chat(client, known).status_code == 429, "limits are back with the store"


# -- CLI --------------------------------------------------------------------------------------

def test_cli_round_trip(app, cloudflare):
    runner = app.test_cli_runner()
    made = runner.invoke(args=["keys", "create", "--name", "dave", "--models", "@cf/meta/*",
                               "--rpm", "5", "--tpm", "5000", "--max-parallel", "2",
                               "--daily-tokens", "100000", "--expires", "30d"])
    assert made.exit_code == 0, made.output
    secret = made.output.strip().splitlines()[-1]
    assert secret.startswith("sk-cf-") and len(secret) >= 46
    assert chat(app.test_client(), secret).status_code == 200
    listed = runner.invoke(args=["keys", "list"])
    assert listed.exit_code == 0 and "dave" in listed.output and "@cf/meta/*" in listed.output
    assert secret not in listed.output and digest(secret) not in listed.output
    record = app.extensions["state"].list_keys()[0]
    assert record["expires_at"] - record["created_at"] == 30 * 86400
    used = runner.invoke(args=["keys", "usage", "dave", "--days", "7"])
    assert used.exit_code == 0 and MODEL in used.output
    assert used.output.splitlines()[1].split()[-3:] == ["1", "7", "5"]
    taken = runner.invoke(args=["keys", "create", "--name", "dave"])
    assert taken.exit_code != 0 and "already exists" in taken.output
    assert runner.invoke(args=["keys", "revoke", "dave"]).exit_code == 0
    assert runner.invoke(args=["keys", "revoke", "dave"]).exit_code != 0
    assert chat(app.test_client(), secret).status_code == 401


@pytest.mark.parametrize("args, complaint", [
    pytest.param(["--name", "x", "--rpm", "0"], "--rpm", id="zero-rpm"),
    pytest.param(["--name", "x", "--expires", "soon"], "--expires", id="bad-expiry"),
    pytest.param(["--name", "bad name"], "--name", id="bad-name"),
    pytest.param([], "--name", id="no-name"),
    pytest.param(["--name", "x", "--daily-tokens", str(2**63)], "--daily-tokens",
                 id="budget-2^63"),
    pytest.param(["--name", "x", "--daily-tokens", str(2**70)], "--daily-tokens",
                 id="budget-beyond-64-bits"),
    pytest.param(["--name", "x", "--tpm", str(2**53)], "--tpm", id="tpm-2^53"),
    pytest.param(["--name", "x", "--max-parallel", str(2**63)], "--max-parallel",
                 id="parallel-2^63"),
    pytest.param(["--name", "x", "--expires", str(2**63)], "--expires:", id="expiry-2^63"),
])
def test_cli_refuses_bad_options(app, args, complaint):
    result = app.test_cli_runner().invoke(args=["keys", "create", *args])
    assert result.exit_code == 2 and complaint in result.output, result.output
    assert "--expires-in" not in result.output, "the option is --expires"
    assert app.extensions["state"].list_keys() == []


@pytest.mark.parametrize("patterns", [["@cf/meta/*"], ["gpt-4o-mini"]], ids=["model", "alias"])
def test_model_patterns_cover_aliases(store_url, cloudflare, patterns):
    """A pattern may name an alias or the model behind it; /v1/models follows suit."""
    class Config(TestConfig):
        STATE_URL = store_url
        ADMIN_TOKEN = ADMIN
        MODEL_ALIASES = {"gpt-4o-mini": MODEL, "gemma": GEMMA}
    client = create_app(Config).test_client()
    rv = client.post("/admin/keys", json={"name": "aliased", "models": patterns},
                     headers={"Authorization": f"Bearer {ADMIN}"})
    secret = rv.get_json()["key"]
    assert chat(client, secret, model="gpt-4o-mini").status_code == 200
    assert chat(client, secret, model="gemma").status_code == 404
    listed = client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
    ids = {m["id"] for m in listed.get_json()["data"]}
    assert "gpt-4o-mini" in ids and "gemma" not in ids and GEMMA not in ids


@pytest.mark.parametrize("path, body", [
    pytest.param(CHAT, {"messages": [{"role": "user", "content": "Hello"}]}, id="chat"),
    pytest.param("/v1/completions", {"prompt": "Hello"}, id="completions"),
    pytest.param("/v1/responses", {"input": "Hello"}, id="responses"),
])
def test_every_model_route_gets_the_key_check(client, admin, cloudflare, path, body):
    """The check is one hook on every POST /v1 route: new routes are covered by default."""
    secret = admin.create(name="one-a-minute", rpm=1, models=["@cf/meta/*"])["key"]
    auth = {"Authorization": f"Bearer {secret}"}
    refused = client.post(path, json={"model": GEMMA, **body}, headers=auth)
    assert refused.status_code == 404 and refused.get_json()["error"]["code"] == "model_not_found"
    first = client.post(path, json={"model": MODEL, **body}, headers=auth)
    assert first.status_code == 200, first.get_data(as_text=True)
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    second = client.post(path, json={"model": MODEL, **body}, headers=auth)
    assert second.status_code == 429 and second.headers["Retry-After"]
    assert [c.request.method for c in cloudflare.calls].count("POST") == 1


def test_upload_over_the_audio_limit_is_the_routes_413_for_a_stored_key(store_url, cloudflare):
    """The key check reads the model of a multipart upload with the route's own reader: above
    AUDIO_MAX_BYTES a stored key gets the same 413 naming `file` as an API_KEYS key (it got
    werkzeug's bare 413 with no param), and nothing goes upstream."""
    class Config(TestConfig):
        STATE_URL = store_url
        ADMIN_TOKEN = ADMIN
        AUDIO_MAX_BYTES = 4096
    client = create_app(Config).test_client()
    rv = client.post("/admin/keys", json={"name": "uploader", "rpm": 100},
                     headers={"Authorization": f"Bearer {ADMIN}"})
    for key in (rv.get_json()["key"], KEY):
        upload = {"model": "@cf/openai/whisper", "file": (io.BytesIO(b"\0" * 8192), "a.wav")}
        rv = client.post("/v1/audio/transcriptions", data=upload, content_type="multipart/form-data",
                         headers={"Authorization": f"Bearer {key}"})
        assert rv.status_code == 413, rv.get_data(as_text=True)
        assert rv.get_json()["error"]["param"] == "file"
        validate_error(rv.get_json())
    assert [c.request.method for c in cloudflare.calls].count("POST") == 0
