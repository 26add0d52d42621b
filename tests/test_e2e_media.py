"""End to end for the media routes and aliases: real gunicorn + gevent, the fake Workers AI,
the official OpenAI SDK (and LangChain's OpenAIEmbeddings).

Every JSON body is also fetched raw and checked against OpenAI's schemas.
"""
import base64
import struct

import openai
import pytest
import requests

from tests.fake_media import vector_for
from tests.fake_workers_ai import FakeWorkersAI
from tests.openai_spec import validate, validate_error, validate_models_list
from tests.servers import run_gateway

KEY = "sk-e2e-media-key-8c1d"
TOKEN = "cf-e2e-media-token-27ab"
ACCOUNT = "acct-e2e-media"
BGE = "@cf/baai/bge-base-en-v1.5"
LLAMA = "@cf/meta/llama-3.1-8b-instruct"
ALIASES = {"gpt-4o-mini": LLAMA, "text-embedding-3-small": BGE,
           "dall-e-3": "@cf/stabilityai/stable-diffusion-xl-base-1.0",
           "whisper-1": "@cf/openai/whisper-large-v3-turbo", "tts-1": "@cf/deepgram/aura-1",
           "gpt-broken": "@cf/acme/not-a-model"}


@pytest.fixture(scope="module")
def fake():
    with FakeWorkersAI(accounts={ACCOUNT: TOKEN}) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("e2e-media") / "gateway.log"
    settings = {"API_KEYS": KEY, "CLOUDFLARE_ACCOUNT_ID": ACCOUNT, "CLOUDFLARE_API_TOKEN": TOKEN,
                "CLOUDFLARE_API_BASE": fake.base_url, "UPSTREAM_RETRIES": "0",
                "MODEL_ALIASES": ",".join(f"{k}={v}" for k, v in ALIASES.items())}
    with run_gateway(settings, log_path, workers=2) as (base_url, _):
        yield base_url, log_path
    log = log_path.read_text(errors="replace")
    assert KEY not in log and TOKEN not in log, "a secret reached the gateway log"
    assert "Traceback" not in log, log
    for text in ("secret words to embed", "a lighthouse at dusk", "read this aloud"):
        assert text not in log, "request content reached the gateway log"


@pytest.fixture(autouse=True)
def clean_fake(fake):
    fake.reset()


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=f"{gateway[0]}/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture
def http(gateway):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {KEY}"
    session.base = gateway[0] + "/v1"
    return session


def runs(fake):
    return [r for r in fake.requests if "/ai/run/" in r.path]


# ---------------------------------------------------------------- models and aliases


def test_models_list_every_task_and_the_aliases(client, http):
    body = http.get(f"{http.base}/models").json()
    validate_models_list(body)
    tasks = {m["metadata"]["task"] for m in body["data"]}
    assert tasks == {"Text Generation", "Text Embeddings", "Text-to-Image",
                     "Automatic Speech Recognition", "Text-to-Speech"}
    by_id = {m["id"]: m for m in body["data"]}
    assert by_id["text-embedding-3-small"]["metadata"]["alias_of"] == BGE
    assert by_id["text-embedding-3-small"]["metadata"]["task"] == "Text Embeddings"
    assert "gpt-broken" not in by_id
    assert client.models.retrieve("tts-1").id == "tts-1"


def test_broken_alias_is_404_and_reported_once_at_start_up(client, gateway, fake):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-broken",
                                       messages=[{"role": "user", "content": "hi"}])
    assert runs(fake) == []
    log = gateway[1].read_text()
    assert log.count("MODEL_ALIASES: the alias 'gpt-broken'") == 1


def test_chat_by_alias_echoes_the_alias(client, fake):
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}])
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == "Echo: hello there"
    assert runs(fake)[0].model == LLAMA


def test_embedding_model_on_chat_is_400_naming_model(client, fake):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="text-embedding-3-small",
                                       messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["param"] == "model"
    assert runs(fake) == []


# ---------------------------------------------------------------- embeddings


@pytest.mark.parametrize("count", [1, 100, 250])
@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_embeddings_keep_order(client, fake, count, encoding_format):
    texts = [f"secret words to embed {i}" for i in range(count)]
    result = client.embeddings.create(model=BGE, input=texts, encoding_format=encoding_format)
    assert [item.index for item in result.data] == list(range(count))
    assert result.model == BGE and result.usage.prompt_tokens > 0
    if encoding_format == "float":  # the SDK hands base64 back as the string it got
        for item, text in zip(result.data, texts):
            assert item.embedding == pytest.approx(vector_for(text, 768), abs=1e-6)
    else:
        for item, text in zip(result.data, texts):
            floats = struct.unpack("<768f", base64.b64decode(item.embedding))
            assert floats == pytest.approx(vector_for(text, 768), abs=1e-6)
    assert len(runs(fake)) == -(-count // 100)


def test_embeddings_default_encoding_through_the_sdk(client):
    """The SDK asks for base64 by default and decodes it to floats itself."""
    result = client.embeddings.create(model="text-embedding-3-small", input="secret words to embed")
    assert result.model == "text-embedding-3-small"
    assert result.data[0].embedding == pytest.approx(vector_for("secret words to embed", 768),
                                                     abs=1e-6)


def test_embeddings_raw_body_matches_openai_schema(http):
    rv = http.post(f"{http.base}/embeddings", json={"model": BGE, "input": ["a", "b"]})
    validate(rv.json(), "CreateEmbeddingResponse")
    rv = http.post(f"{http.base}/embeddings", json={"model": BGE, "input": []})
    assert rv.status_code == 400 and rv.json()["error"]["param"] == "input"
    validate_error(rv.json())


def test_langchain_openai_embeddings(gateway):
    from langchain_openai import OpenAIEmbeddings

    embedder = OpenAIEmbeddings(model="text-embedding-3-small", base_url=f"{gateway[0]}/v1",
                                api_key=KEY, check_embedding_ctx_length=False, max_retries=0)
    documents = [f"secret words to embed {i}" for i in range(130)]
    vectors = embedder.embed_documents(documents)
    assert len(vectors) == 130
    assert vectors[129] == pytest.approx(vector_for(documents[129], 768), abs=1e-6)
    assert embedder.embed_query("a query") == pytest.approx(vector_for("a query", 768), abs=1e-6)
