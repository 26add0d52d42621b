"""End to end for the media routes and aliases: real gunicorn + gevent, the fake Workers AI,
the official OpenAI SDK (and LangChain's OpenAIEmbeddings).

Every JSON body is also fetched raw and checked against OpenAI's schemas.
"""
import base64
import io
import json
import math
import struct
import time
import wave

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


def test_completions_and_responses_by_alias(client, fake):
    completion = client.completions.create(model="gpt-4o-mini", prompt="hello there")
    assert completion.model == "gpt-4o-mini" and completion.choices[0].text == "Echo: hello there"
    response = client.responses.create(model="gpt-4o-mini", input="hello there", store=False)
    assert response.model == "gpt-4o-mini" and response.output_text == "Echo: hello there"
    assert {r.model for r in runs(fake)} == {LLAMA}


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


def test_request_log_has_input_counts_not_content(client, gateway):
    client.embeddings.create(model=BGE, input=["secret words to embed"] * 3,
                             extra_headers={"X-Request-ID": "embed-log-check"})
    deadline = time.monotonic() + 30  # the line is written once the response is closed
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in gateway[1].read_text().splitlines()
                 if '"request_id":"embed-log-check"' in line]
        if lines:
            break
        time.sleep(0.05)
    assert lines[0]["inputs"] == 3 and lines[0]["input_bytes"] == 63


# ---------------------------------------------------------------- images


def png_size(data):
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), data[:16]
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("model, size, expected", [
    pytest.param("@cf/stabilityai/stable-diffusion-xl-base-1.0", "512x768", (512, 768),
                 id="png-bytes"),
    pytest.param("dall-e-3", "1024x1024", (1024, 1024), id="alias"),
    pytest.param("@cf/black-forest-labs/flux-1-schnell", None, (1024, 1024), id="json-base64"),
    pytest.param("@cf/black-forest-labs/flux-2-klein-4b", "256x512", (256, 512),
                 id="multipart-only"),
])
def test_images_generate_each_family(client, http, model, size, expected):
    options = {"size": size} if size else {}
    result = client.images.generate(model=model, prompt="a lighthouse at dusk", n=2, **options)
    assert len(result.data) == 2
    for image in result.data:
        assert png_size(base64.b64decode(image.b64_json)) == expected
    rv = http.post(f"{http.base}/images/generations",
                   json={"model": model, "prompt": "a lighthouse at dusk", **options})
    validate(rv.json(), "ImagesResponse")


def test_images_bad_size_is_400_with_nothing_upstream(client, fake):
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="@cf/black-forest-labs/flux-1-schnell", prompt="x",
                               size="512x512")
    assert caught.value.body["param"] == "size"
    assert runs(fake) == []


# ---------------------------------------------------------------- transcription


def tone_wav(seconds=2.0, rate=16000):
    """A WAV file of a 440 Hz tone, made here."""
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(b"".join(
            struct.pack("<h", int(12000 * math.sin(2 * math.pi * 440 * i / rate)))
            for i in range(int(rate * seconds))))
    return out.getvalue()


@pytest.fixture(scope="module")
def wav_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "tone.wav"
    path.write_bytes(tone_wav())
    return path


@pytest.mark.parametrize("response_format", ["json", "text", "srt", "vtt", "verbose_json"])
def test_transcriptions_in_every_format(client, wav_file, response_format):
    with wav_file.open("rb") as audio:
        result = client.audio.transcriptions.create(model="whisper-1", file=audio,
                                                    response_format=response_format)
    said = "Heard 2.00 seconds of audio."
    if response_format == "json":
        assert result.text == said
    elif response_format == "verbose_json":
        assert result.text == said and result.duration == 2.0 and len(result.segments) == 2
    elif response_format == "text":
        assert result.strip() == said
    elif response_format == "srt":
        assert result.startswith("1\n00:00:00,000 --> 00:00:01,000\n")
    else:
        assert result.startswith("WEBVTT") and "00:00:00.000 --> 00:00:02.000" in result


@pytest.mark.parametrize("model", ["@cf/openai/whisper", "@cf/openai/whisper-tiny-en",
                                   "@cf/deepgram/nova-3"])
def test_transcriptions_on_every_audio_input_style(client, http, wav_file, model):
    with wav_file.open("rb") as audio:
        assert client.audio.transcriptions.create(model=model, file=audio).text == \
            "Heard 2.00 seconds of audio."
    with wav_file.open("rb") as audio:
        rv = http.post(f"{http.base}/audio/transcriptions", data={"model": model},
                       files={"file": ("tone.wav", audio, "audio/wav")})
    validate(rv.json(), "CreateTranscriptionResponseJson")
    with wav_file.open("rb") as audio:
        rv = http.post(f"{http.base}/audio/transcriptions",
                       data={"model": model, "response_format": "verbose_json"},
                       files={"file": ("tone.wav", audio, "audio/wav")})
    validate(rv.json(), "CreateTranscriptionResponseVerboseJson")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks translations so
def test_translations(client, http, wav_file, fake):
    with wav_file.open("rb") as audio:
        result = client.audio.translations.create(model="whisper-1", file=audio)
    assert result.text == "Translated 2.00 seconds of audio."
    with wav_file.open("rb") as audio:
        rv = http.post(f"{http.base}/audio/translations",
                       data={"model": "whisper-1", "response_format": "verbose_json"},
                       files={"file": ("tone.wav", audio, "audio/wav")})
    validate(rv.json(), "CreateTranslationResponseVerboseJson")
    assert all(r.json["task"] == "translate" for r in runs(fake))


def test_audio_limit_is_not_the_json_limit(client, http, fake):
    """A 3 MiB upload passes (the JSON routes stop at 1 MiB); 26 MiB is 413 naming file."""
    big = tone_wav(seconds=100)  # 3.2 MB
    result = client.audio.transcriptions.create(model="whisper-1", file=("long.wav", big))
    assert result.text == "Heard 100.00 seconds of audio."
    rv = http.post(f"{http.base}/audio/transcriptions", data={"model": "whisper-1"},
                   files={"file": ("huge.wav", b"\0" * (26 * 1024 * 1024), "audio/wav")})
    assert rv.status_code == 413 and rv.json()["error"]["param"] == "file"
    rv = http.post(f"{http.base}/embeddings", json={"model": BGE, "input": "x" * (1 << 20)})
    assert rv.status_code == 413
    assert len(runs(fake)) == 1


# ---------------------------------------------------------------- speech


@pytest.mark.parametrize("model, voice", [
    pytest.param("tts-1", "luna", id="aura-binary-by-alias"),
    pytest.param("@cf/deepgram/aura-2-en", "thalia", id="aura-2"),
    pytest.param("@cf/myshell-ai/melotts", "alloy", id="melotts-base64"),
])
def test_speech_streams_an_mp3(client, tmp_path, model, voice):
    target = tmp_path / "speech.mp3"
    with client.audio.speech.with_streaming_response.create(
            model=model, voice=voice, input="read this aloud " * 20) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        response.stream_to_file(target)
    data = target.read_bytes()
    assert data[:3] == b"ID3" or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0)
    assert len(data) > 417 * 3


def test_speech_arrives_in_pieces_as_upstream_sends_them(http, fake):
    fake.token_delay = 0.2  # between the fake's 4 KiB chunks
    with http.post(f"{http.base}/audio/speech", stream=True,
                   json={"model": "tts-1", "voice": "luna", "input": "read this aloud " * 30}) as rv:
        assert rv.headers.get("Transfer-Encoding") == "chunked"
        pieces = [piece for piece in rv.raw.stream(65536, decode_content=False) if piece]
    assert len(pieces) >= 2 and b"".join(pieces)[:3] == b"ID3"


def test_speech_broken_off_upstream_is_an_incomplete_body_not_a_short_file(http, fake):
    fake.cut_binary_after = 1
    with http.post(f"{http.base}/audio/speech", stream=True,
                   json={"model": "tts-1", "voice": "luna", "input": "read this aloud " * 30}) as rv:
        assert rv.status_code == 200
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for _ in rv.iter_content(65536):
                pass


def test_speech_voice_the_model_lacks_is_400_listing_its_voices(client, fake):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="tts-1", voice="alloy", input="hello")
    assert caught.value.body["param"] == "voice" and "asteria" in caught.value.body["message"]
    assert runs(fake) == []
