"""POST /v1/audio/transcriptions, /translations and /speech: translation and routes.

The routes run in-process against the fake Workers AI (three audio input styles, base64
and binary speech); JSON answers are checked against OpenAI's schemas.
"""
import base64
import io
import math
import struct
import wave

import pytest

from gateway.openai import speech, subtitles, transcripts
from tests.media_gateway import assert_refused, AUTH, media_client, run_requests, start_fake
from tests.openai_spec import validate, validate_error

WHISPER = "@cf/openai/whisper"
TURBO = "@cf/openai/whisper-large-v3-turbo"
NOVA = "@cf/deepgram/nova-3"
MELO = "@cf/myshell-ai/melotts"
AURA = "@cf/deepgram/aura-1"


def tone(seconds=1.5, rate=16000):
    """A WAV file of a 440 Hz tone."""
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i
                                                                        / rate)))
                                   for i in range(int(rate * seconds))))
    return out.getvalue()


WAV = tone()


# ---------------------------------------------------------------- translation


def test_srt_and_vtt_from_segments():
    segments = [{"start": 0.0, "end": 1.25, "text": " Hello there."},
                {"start": 61.5, "end": 3725.004, "text": "General Kenobi."}]
    timed = subtitles.cues("", segments)
    assert subtitles.srt(timed) == ("1\n00:00:00,000 --> 00:00:01,250\nHello there.\n\n"
                                    "2\n00:01:01,500 --> 01:02:05,004\nGeneral Kenobi.\n")
    assert subtitles.vtt(timed).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.250\n")


def test_cues_from_words_in_groups():
    words = [{"word": f"w{i}", "start": i * 0.5, "end": i * 0.5 + 0.4} for i in range(20)]
    timed = subtitles.cues("", (), words)
    assert len(timed) == 2 and timed[0][2].split()[0] == "w0" and timed[1][0] == 6.0


@pytest.mark.parametrize("body, text, duration", [
    pytest.param({"result": {"text": "hi there", "words": [
        {"word": "hi", "start": 0, "end": 0.5}, {"word": "there", "start": 0.5, "end": 1.1}]}},
        "hi there", 1.1, id="whisper"),
    pytest.param({"result": {"text": "hi", "transcription_info": {"duration": 2.5,
                                                                  "language": "fr"}}},
                 "hi", 2.5, id="whisper-turbo"),
    pytest.param({"result": {"results": {"channels": [{"alternatives": [
        {"transcript": "bonjour", "words": [{"word": "bonjour", "start": 0.1, "end": 0.9}]}]}]}}},
        "bonjour", 0.9, id="deepgram"),
])
def test_every_answer_shape_is_read(body, text, duration):
    transcript = transcripts.read_transcript(body)
    assert (transcript.text, transcript.duration) == (text, duration)


@pytest.mark.parametrize("body", [
    pytest.param({"result": {"image": "x"}}, id="no-text"),
    pytest.param({"result": {"results": {"channels": []}}}, id="deepgram-no-channel"),
    pytest.param({"result": None}, id="null"),
])
def test_unreadable_transcripts_are_refused(body):
    with pytest.raises(transcripts.UnreadableTranscript):
        transcripts.read_transcript(body)


def test_unknown_schema_sends_raw_bytes_except_the_last_resort_table():
    assert transcripts.upstream_request(b"abc", "audio/wav", {}, "@cf/new/asr", None) == \
        (None, b"abc")
    payload, raw = transcripts.upstream_request(b"abc", "audio/wav", {}, TURBO, None)
    assert payload == {"audio": base64.b64encode(b"abc").decode()} and raw is None


def test_melotts_json_audio_is_decoded():
    assert speech.audio_in_json({"result": {"audio": base64.b64encode(b"ID3abc").decode()}}) == \
        b"ID3abc"
    with pytest.raises(speech.NotAudio):
        speech.audio_in_json({"result": {"audio": "%%%"}})


# ---------------------------------------------------------------- routes


@pytest.fixture(scope="module")
def fake():
    server = start_fake()
    yield server
    server.stop()


@pytest.fixture
def client(fake):
    fake.reset()
    return media_client(fake, AUDIO_MAX_BYTES=200_000,
                        MODEL_ALIASES={"whisper-1": TURBO, "tts-1": AURA})


def transcribe(client, path="/v1/audio/transcriptions", file=WAV, filename="tone.wav",
               content_type="audio/wav", **fields):
    data = dict(fields)
    if file is not None:
        data["file"] = (io.BytesIO(file), filename, content_type)
    return client.post(path, data=data, headers=AUTH, content_type="multipart/form-data")


@pytest.mark.parametrize("model, sent", [
    pytest.param(WHISPER, lambda r: r.json == {"audio": list(WAV)}, id="byte-array"),
    pytest.param(TURBO, lambda r: r.json == {"audio": base64.b64encode(WAV).decode(),
                                             "language": "en"}, id="base64"),
    pytest.param(NOVA, lambda r: r.body == WAV and r.headers["Content-Type"] == "audio/wav",
                 id="raw-bytes"),
])
def test_each_model_gets_the_audio_its_way(client, fake, model, sent):
    language = {"language": "en"} if model == TURBO else {}
    rv = transcribe(client, model=model, **language)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    validate(rv.get_json(), "CreateTranscriptionResponseJson")
    assert rv.get_json()["text"] == "Heard 1.50 seconds of audio."
    assert sent(run_requests(fake)[0])


@pytest.mark.parametrize("filename, content_type", [
    pytest.param("upload", "application/octet-stream", id="bytes-from-the-sdk"),
    pytest.param("blob", "", id="browser-blob"),
])
def test_raw_bytes_model_gets_the_sniffed_audio_type_when_the_upload_names_none(
        client, fake, filename, content_type):
    """The SDKs send bytes (`file=data`) as application/octet-stream with no extension; a
    model that takes raw bytes needs the audio MIME type, so it is read off the file itself."""
    rv = transcribe(client, model=NOVA, filename=filename, content_type=content_type)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    assert run_requests(fake)[0].headers["Content-Type"] == "audio/wav"


@pytest.mark.parametrize("head, expected", [
    pytest.param(b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wav", id="wav"),
    pytest.param(b"ID3\x04\x00\x00\x00\x00\x00\x00\x00\x00", "audio/mpeg", id="mp3-id3"),
    pytest.param(b"\xff\xfb\x90\x00" + bytes(8), "audio/mpeg", id="mp3-frame"),
    pytest.param(b"OggS\x00\x02" + bytes(6), "audio/ogg", id="ogg"),
    pytest.param(b"fLaC\x00\x00\x00\x22" + bytes(4), "audio/flac", id="flac"),
    pytest.param(b"\x00\x00\x00\x20ftypM4A ", "audio/mp4", id="m4a"),
    pytest.param(b"\x1a\x45\xdf\xa3" + bytes(8), "audio/webm", id="webm"),
    pytest.param(b"hello world!", None, id="not-audio"),
])
def test_audio_type_is_sniffed_from_the_first_bytes(head, expected):
    assert transcripts.sniff_audio_type(head) == expected


def test_verbose_json_has_segments_and_words_where_the_model_gives_them(client):
    rv = transcribe(client, model="whisper-1", response_format="verbose_json",
                    **{"timestamp_granularities[]": "word"})
    body = rv.get_json()
    validate(body, "CreateTranscriptionResponseVerboseJson")
    assert body["duration"] == 1.5 and len(body["segments"]) == 2 and body["words"]
    assert body["segments"][0]["id"] == 0


def test_translation_asks_for_the_translate_task(client, fake):
    rv = transcribe(client, path="/v1/audio/translations", model=TURBO,
                    response_format="verbose_json")
    validate(rv.get_json(), "CreateTranslationResponseVerboseJson")
    assert rv.get_json()["text"].startswith("Translated")
    assert run_requests(fake)[0].json["task"] == "translate"


@pytest.mark.parametrize("path, fields, param", [
    pytest.param(None, {"model": WHISPER, "file": None}, "file", id="no-file"),
    pytest.param(None, {"model": WHISPER, "file": b""}, "file", id="empty-file"),
    pytest.param(None, {"file": WAV}, "model", id="no-model"),
    pytest.param(None, {"model": WHISPER, "response_format": "mp3"}, "response_format",
                 id="response-format"),
    pytest.param(None, {"model": WHISPER, "temperature": "2"}, "temperature",
                 id="temperature-range"),
    pytest.param(None, {"model": WHISPER, "temperature": "0.5"}, "temperature",
                 id="temperature-not-taken"),
    pytest.param(None, {"model": WHISPER, "language": "fr"}, "language",
                 id="language-not-taken"),
    pytest.param(None, {"model": NOVA, "prompt": "names: Ada"}, "prompt", id="prompt-not-taken"),
    pytest.param(None, {"model": TURBO, "language": "not a code"}, "language",
                 id="language-malformed"),
    pytest.param(None, {"model": TURBO, "stream": "true"}, "stream", id="stream"),
    pytest.param(None, {"model": MELO}, "model", id="speech-model"),
    pytest.param("/v1/audio/translations", {"model": WHISPER}, "model",
                 id="translation-without-translate-task"),
])
def test_bad_upload_is_400_naming_the_parameter_with_nothing_upstream(client, fake, path, fields,
                                                                      param):
    file = fields.pop("file", WAV)
    rv = transcribe(client, path=path or "/v1/audio/transcriptions", file=file, **fields)
    assert_refused(rv, fake, param)


def test_upload_over_audio_limit_is_413_and_json_routes_keep_1_mib(client, fake):
    rv = transcribe(client, model=WHISPER, file=bytes(250_000))
    assert rv.status_code == 413 and rv.get_json()["error"]["param"] == "file"
    validate_error(rv.get_json())
    ok = transcribe(client, model=WHISPER, file=tone(seconds=5))  # 160 kB: over nothing
    assert ok.status_code == 200
    rv = client.post("/v1/embeddings", headers=AUTH,
                     json={"model": "@cf/baai/bge-base-en-v1.5", "input": "x" * (1 << 20)})
    assert rv.status_code == 413
    assert len(run_requests(fake)) == 1


def test_json_body_on_transcriptions_is_400(client, fake):
    rv = client.post("/v1/audio/transcriptions", json={"model": WHISPER}, headers=AUTH)
    assert rv.status_code == 400 and rv.get_json()["error"]["param"] == "file"


# -- speech


def speak(client, **body):
    return client.post("/v1/audio/speech", json={"input": "read this aloud", "voice": "luna",
                                                 **body}, headers=AUTH)


@pytest.mark.parametrize("model, fmt, content_type, magic", [
    pytest.param(MELO, "mp3", "audio/mpeg", b"ID3", id="melotts-base64"),
    pytest.param(AURA, "mp3", "audio/mpeg", b"ID3", id="aura-binary"),
    pytest.param("@cf/deepgram/aura-2-en", "wav", "audio/wav", b"RIFF", id="aura-2-wav"),
    pytest.param(AURA, "flac", "audio/flac", b"fLaC", id="aura-flac"),
])
def test_speech_is_audio_with_the_right_type(client, fake, model, fmt, content_type, magic):
    rv = speak(client, model=model, response_format=fmt)
    assert rv.status_code == 200, rv.get_data(as_text=True)
    assert rv.headers["Content-Type"] == content_type
    assert rv.get_data().startswith(magic)


def test_speech_sends_speaker_and_encoding(client, fake):
    speak(client, model="tts-1", response_format="opus")
    assert run_requests(fake)[0].json == {"text": "read this aloud", "speaker": "luna",
                                          "encoding": "opus", "container": "ogg"}
    assert run_requests(fake)[0].model == AURA


@pytest.mark.parametrize("body, param", [
    pytest.param({"model": AURA, "input": ""}, "input", id="empty-input"),
    pytest.param({"model": AURA, "input": "x" * 4097}, "input", id="input-over-4096"),
    pytest.param({"model": AURA, "voice": "alloy"}, "voice", id="voice-the-model-lacks"),
    pytest.param({"model": AURA, "response_format": "ogg"}, "response_format",
                 id="unknown-format"),
    pytest.param({"model": MELO, "response_format": "wav"}, "response_format",
                 id="format-the-model-cannot-encode"),
    pytest.param({"model": AURA, "speed": 1.5}, "speed", id="speed-unsupported"),
    pytest.param({"model": AURA, "speed": 5}, "speed", id="speed-over-4"),
    pytest.param({"model": AURA, "speed": 0.1}, "speed", id="speed-under-0.25"),
    pytest.param({"model": AURA, "instructions": "cheerful"}, "instructions",
                 id="instructions"),
    pytest.param({"model": AURA, "stream_format": "sse"}, "stream_format", id="sse"),
    pytest.param({"model": WHISPER}, "model", id="recognition-model"),
])
def test_bad_speech_is_400_naming_the_parameter_with_nothing_upstream(client, fake, body, param):
    rv = speak(client, **body)
    assert_refused(rv, fake, param)


def test_voice_error_lists_the_voices(client):
    rv = speak(client, model=AURA, voice="alloy")
    assert "angus" in rv.get_json()["error"]["message"]


def test_speed_1_is_accepted_everywhere(client):
    assert speak(client, model=MELO, speed=1).status_code == 200


def test_stored_key_uploads_under_the_audio_limit_and_its_model_patterns(fake, tmp_path):
    """The per-key check reads the form before the route: it too reads under AUDIO_MAX_BYTES."""
    fake.reset()
    admin_token = "admin-token-audio-test"
    client = media_client(fake, STATE_URL=f"sqlite:///{tmp_path}/state.db",
                          ADMIN_TOKEN=admin_token, MAX_CONTENT_LENGTH=100_000,
                          AUDIO_MAX_BYTES=2_000_000)
    rv = client.post("/admin/keys", headers={"Authorization": f"Bearer {admin_token}"},
                     json={"name": "dictation", "models": ["@cf/openai/*"]})
    assert rv.status_code == 201, rv.get_data(as_text=True)
    key = {"Authorization": f"Bearer {rv.get_json()['key']}"}
    audio = tone(seconds=15)  # 480 kB: over MAX_CONTENT_LENGTH, under AUDIO_MAX_BYTES
    rv = client.post("/v1/audio/transcriptions", headers=key, content_type="multipart/form-data",
                     data={"model": TURBO, "file": (io.BytesIO(audio), "tone.wav", "audio/wav")})
    assert rv.status_code == 200, rv.get_data(as_text=True)
    assert rv.get_json()["text"] == "Heard 15.00 seconds of audio."
    rv = client.post("/v1/audio/transcriptions", headers=key, content_type="multipart/form-data",
                     data={"model": NOVA, "file": (io.BytesIO(audio), "tone.wav", "audio/wav")})
    assert rv.status_code == 404
    assert len(run_requests(fake)) == 1
