"""The fake Workers AI's embedding, image and speech models: records, schemas, answers.

Modelled on each model's catalogue record and JSON schema (the model pages under
https://developers.cloudflare.com/workers-ai/models/, Cloudflare's 2024 OpenAPI request
bodies, and the ``@cloudflare/workers-types`` AI types), one family at a time:

* embeddings: ``{text: string | string[] (maxItems 100)}`` answered ``{shape, data, pooling}``;
  bge-m3 also takes ``{contexts: [{text}]}`` and answers that with the vectors in ``response``;
* images: JSON ``{image: <base64>}`` (flux-1-schnell, ``additionalProperties: false``: no width),
  raw ``image/png`` bytes (the Stable Diffusion family, width/height 256-2048), and FLUX.2,
  which takes only ``multipart/form-data`` and answers JSON;
* speech recognition: a byte array ``{audio: number[]}`` (whisper, whisper-tiny-en), base64
  ``{audio: string, task, language, initial_prompt}`` (whisper-large-v3-turbo, with
  segments), or the raw audio bytes with their content type (deepgram nova-3);
* text-to-speech: JSON ``{audio: <base64 mp3>}`` (melotts) or raw ``audio/mpeg`` bytes sent in
  chunks as they are "spoken" (aura-1, aura-2-en, with their ``speaker`` enums).

Answers are deterministic, so tests can check them: an embedding is a function of its
text (``vector_for``), an image is a PNG of the asked size, a transcript says how long the
WAV was, speech is silent MP3 frames, one per 20 characters.
"""
import base64
import email.parser
import email.policy
import hashlib
import io
import json
import random
import struct
import wave
import zlib

EMBEDDINGS = {"id": "0137cdcf-162a-4108-94f2-1ca59e8c65ee", "name": "Text Embeddings",
              "description": "Feature extraction models transform raw data into numerical "
                             "features."}
IMAGES = {"id": "3d6e1f35-341b-4915-a6c8-9a7142a9033a", "name": "Text-to-Image",
          "description": "Generates images from input text."}
ASR = {"id": "dfce1c48-2a81-462e-a7fd-de97ce985207", "name": "Automatic Speech Recognition",
       "description": "Automatic speech recognition (ASR) models convert a speech signal."}
TTS = {"id": "b52660a1-9a95-4ab2-8b1d-f232be34604a", "name": "Text-to-Speech",
       "description": "Text-to-Speech (TTS) models convert text into audio."}


def _record(name, task, properties=None, created="2025-01-15 10:00:00.000"):
    return {"id": f"fake-{zlib.crc32(name.encode()):08x}", "source": 1, "name": name,
            "description": f"{name.rsplit('/', 1)[-1]} (fake)", "created_at": created,
            "tags": [], "task": task,
            "properties": [{"property_id": k, "value": v} for k, v in (properties or {}).items()]}


# Records the default catalogue lacks (bge-base and flux-1-schnell are in it already).
MEDIA_MODELS = [
    _record("@cf/baai/bge-small-en-v1.5", EMBEDDINGS,
            {"max_input_tokens": "512", "output_dimensions": "384"}),
    _record("@cf/baai/bge-large-en-v1.5", EMBEDDINGS,
            {"max_input_tokens": "512", "output_dimensions": "1024"}),
    _record("@cf/baai/bge-m3", EMBEDDINGS, {"context_window": "60000"}),
    _record("@cf/stabilityai/stable-diffusion-xl-base-1.0", IMAGES),
    _record("@cf/lykon/dreamshaper-8-lcm", IMAGES),
    _record("@cf/black-forest-labs/flux-2-klein-4b", IMAGES, {"partner": "true"}),
    _record("@cf/openai/whisper", ASR),
    _record("@cf/openai/whisper-tiny-en", ASR),
    _record("@cf/openai/whisper-large-v3-turbo", ASR),
    _record("@cf/deepgram/nova-3", ASR, {"partner": "true", "realtime": "true"}),
    _record("@cf/myshell-ai/melotts", TTS),
    _record("@cf/deepgram/aura-1", TTS, {"partner": "true", "realtime": "true"}),
    _record("@cf/deepgram/aura-2-en", TTS, {"partner": "true", "realtime": "true"}),
]

# -------------------------------------------------------------------------------- schemas

_TEXTS = {"oneOf": [{"type": "string", "minLength": 1},
                    {"type": "array", "maxItems": 100,
                     "items": {"type": "string", "minLength": 1}}]}
_EMBED_OUT = {"type": "object", "contentType": "application/json",
              "properties": {"shape": {"type": "array", "items": {"type": "number"}},
                             "data": {"type": "array", "items": {"type": "array"}},
                             "pooling": {"type": "string", "enum": ["mean", "cls"]}}}
_BGE = {"input": {"type": "object", "required": ["text"],
                  "properties": {"text": _TEXTS,
                                 "pooling": {"type": "string", "enum": ["mean", "cls"]}}},
        "output": _EMBED_OUT}
_BGE_M3 = {"input": {"oneOf": [
    {"type": "object", "title": "Input Query and Contexts", "required": ["contexts"],
     "properties": {"query": {"type": "string", "minLength": 1},
                    "contexts": {"type": "array", "items": {
                        "type": "object", "properties": {"text": {"type": "string"}}}},
                    "truncate_inputs": {"type": "boolean", "default": False}}},
    {"type": "object", "title": "Input Embedding", "required": ["text"],
     "properties": {"text": _TEXTS, "truncate_inputs": {"type": "boolean", "default": False}}}]},
    "output": {"oneOf": [_EMBED_OUT, {"type": "object", "properties": {
        "response": {"type": "array"}, "shape": {"type": "array"}}}]}}
_PNG_OUT = {"type": "string", "contentType": "image/png", "format": "binary"}
_B64_IMAGE_OUT = {"type": "object", "contentType": "application/json",
                  "properties": {"image": {"type": "string",
                                           "description": "The generated image in Base64 format."}}}
_SD = {"input": {"type": "object", "required": ["prompt"], "properties": {
    "prompt": {"type": "string", "minLength": 1},
    "negative_prompt": {"type": "string"},
    "height": {"type": "integer", "minimum": 256, "maximum": 2048},
    "width": {"type": "integer", "minimum": 256, "maximum": 2048},
    "num_steps": {"type": "integer", "default": 20, "maximum": 20},
    "guidance": {"type": "number", "default": 7.5},
    "seed": {"type": "integer"}}}, "output": _PNG_OUT}
_FLUX1 = {"input": {"type": "object", "required": ["prompt"], "additionalProperties": False,
                    "properties": {"prompt": {"type": "string", "minLength": 1,
                                              "maxLength": 2048},
                                   "steps": {"type": "integer", "default": 4, "maximum": 8}}},
          "output": _B64_IMAGE_OUT}
_FLUX2 = {"input": {"type": "object", "required": ["multipart"], "properties": {
    "multipart": {"type": "object", "required": ["body", "contentType"],
                  "properties": {"body": {"type": "object"}, "contentType": {"type": "string"}}}}},
    "output": _B64_IMAGE_OUT}
_WHISPER_OUT = {"type": "object", "contentType": "application/json", "required": ["text"],
                "properties": {"text": {"type": "string"}, "word_count": {"type": "number"},
                               "words": {"type": "array"}, "vtt": {"type": "string"}}}
_WHISPER = {"input": {"oneOf": [
    {"type": "string", "format": "binary"},
    {"type": "object", "required": ["audio"], "properties": {
        "audio": {"type": "array", "items": {"type": "number"},
                  "description": "An array of integers that represent the audio data "
                                 "constrained to 8-bit unsigned integer values"}}}]},
    "output": _WHISPER_OUT}
_TURBO = {"input": {"type": "object", "required": ["audio"], "properties": {
    "audio": {"anyOf": [{"type": "string", "description": "Base64 encoded value of the audio."},
                        {"type": "object", "properties": {"body": {"type": "object"},
                                                          "contentType": {"type": "string"}}}]},
    "task": {"type": "string", "enum": ["transcribe", "translate"], "default": "transcribe"},
    "language": {"type": "string", "default": "en"},
    "vad_filter": {"type": "boolean", "default": False},
    "initial_prompt": {"type": "string"}, "prefix": {"type": "string"}}},
    "output": {"type": "object", "contentType": "application/json", "required": ["text"],
               "properties": {"transcription_info": {"type": "object"},
                              "text": {"type": "string"}, "word_count": {"type": "number"},
                              "segments": {"type": "array"}, "vtt": {"type": "string"}}}}
_NOVA = {"input": {"type": "object", "required": ["audio"], "properties": {
    "audio": {"type": "object", "required": ["body", "contentType"],
              "properties": {"body": {"type": "object"}, "contentType": {"type": "string"}}},
    "language": {"type": "string"}, "punctuate": {"type": "boolean"},
    "smart_format": {"type": "boolean"}}},
    "output": {"type": "object", "contentType": "application/json",
               "properties": {"results": {"type": "object"}}}}
_MELO = {"input": {"type": "object", "required": ["prompt"], "properties": {
    "prompt": {"type": "string", "minLength": 1},
    "lang": {"type": "string", "default": "en"}}},
    "output": {"oneOf": [{"type": "object", "contentType": "application/json",
                          "properties": {"audio": {"type": "string",
                                                   "description": "The generated audio in MP3 "
                                                                  "format, base64-encoded"}}},
                         {"type": "string", "contentType": "audio/mpeg", "format": "binary"}]}}
AURA_1_SPEAKERS = ["angus", "asteria", "arcas", "orion", "orpheus", "athena", "luna", "zeus",
                   "perseus", "helios", "hera", "stella"]
AURA_2_SPEAKERS = ["amalthea", "andromeda", "apollo", "arcas", "aries", "asteria", "athena",
                   "atlas", "aurora", "callista", "cora", "cordelia", "delia", "draco",
                   "electra", "harmonia", "helena", "hera", "hermes", "hyperion", "iris",
                   "janus", "juno", "jupiter", "luna", "mars", "minerva", "neptune", "odysseus",
                   "ophelia", "orion", "orpheus", "pandora", "phoebe", "pluto", "saturn",
                   "thalia", "theia", "vesta", "zeus"]


def _aura(speakers):
    return {"input": {"type": "object", "required": ["text"], "properties": {
        "text": {"type": "string", "minLength": 1},
        "speaker": {"type": "string", "enum": speakers, "default": speakers[0]},
        "encoding": {"type": "string",
                     "enum": ["linear16", "flac", "mulaw", "alaw", "mp3", "opus", "aac"]},
        "container": {"type": "string", "enum": ["none", "wav", "ogg"]},
        "sample_rate": {"type": "number"}, "bit_rate": {"type": "number"}}},
        "output": {"type": "string", "contentType": "audio/mpeg", "format": "binary"}}


SCHEMAS = {
    "@cf/baai/bge-base-en-v1.5": _BGE, "@cf/baai/bge-small-en-v1.5": _BGE,
    "@cf/baai/bge-large-en-v1.5": _BGE, "@cf/baai/bge-m3": _BGE_M3,
    "@cf/black-forest-labs/flux-1-schnell": _FLUX1,
    "@cf/stabilityai/stable-diffusion-xl-base-1.0": _SD, "@cf/lykon/dreamshaper-8-lcm": _SD,
    "@cf/black-forest-labs/flux-2-klein-4b": _FLUX2,
    "@cf/openai/whisper": _WHISPER, "@cf/openai/whisper-tiny-en": _WHISPER,
    "@cf/openai/whisper-large-v3-turbo": _TURBO, "@cf/deepgram/nova-3": _NOVA,
    "@cf/myshell-ai/melotts": _MELO, "@cf/deepgram/aura-1": _aura(AURA_1_SPEAKERS),
    "@cf/deepgram/aura-2-en": _aura(AURA_2_SPEAKERS),
}
DIMENSIONS = {"@cf/baai/bge-small-en-v1.5": 384, "@cf/baai/bge-base-en-v1.5": 768,
              "@cf/baai/bge-large-en-v1.5": 1024, "@cf/baai/bge-m3": 1024}


class MediaError(Exception):
    """A request refused the way Workers AI refuses it (5006 bad input)."""

    def __init__(self, message, code=5006, status=400):
        super().__init__(message)
        self.message, self.code, self.status = "AiError: Bad input: " + message, code, status


# --------------------------------------------------------------------------- deterministic data

def vector_for(text, dimension):
    """The fake's embedding of `text`: reproducible, different for every text."""
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    return [round(rng.uniform(-1, 1), 6) for _ in range(dimension)]


def png(width, height, seed=0):
    """A valid PNG of one colour, `width` x `height` (8-bit RGB)."""
    colour = bytes(random.Random(seed).randrange(256) for _ in range(3))
    raw = (b"\x00" + colour * width) * height
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


MP3_FRAME = b"\xff\xfb\x90\x64" + bytes(413)  # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz: 417 bytes
ID3 = b"ID3\x04\x00\x00\x00\x00\x00\x00"  # an empty ID3v2.4 tag


def mp3(text):
    """Silent MP3: an ID3 tag then one frame per 20 characters (at least 3 frames)."""
    return ID3 + MP3_FRAME * max(3, len(text) // 20)


def wav_seconds(data):
    """Length of a WAV file in seconds, or None when `data` is not a readable WAV."""
    try:
        with wave.open(io.BytesIO(data)) as audio:
            return audio.getnframes() / audio.getframerate()
    except (wave.Error, EOFError, ZeroDivisionError):
        return None


def heard(audio, translate=False):
    """What the fake "hears" in an audio file: its length, so tests can check the bytes came."""
    seconds = wav_seconds(audio)
    what = f"{seconds:.2f} seconds of audio" if seconds is not None else f"{len(audio)} bytes"
    return f"{'Translated' if translate else 'Heard'} {what}."


# ------------------------------------------------------------------------------------ answers

class Answer:
    """One reply: JSON `result` (wrapped in Cloudflare's envelope), or raw bytes in chunks."""

    def __init__(self, result=None, content_type=None, chunks=None):
        self.result, self.content_type, self.chunks = result, content_type, chunks


def _words(text, seconds):
    words = text.split()
    step = (seconds or 1.0) / max(len(words), 1)
    return [{"word": w, "start": round(i * step, 3), "end": round((i + 1) * step, 3)}
            for i, w in enumerate(words)]


def _vtt(text, seconds):
    end = f"00:00:{seconds or 1.0:06.3f}"
    return f"WEBVTT\n\n00:00:00.000 --> {end}\n{text}\n\n"


def _check_keys(payload, schema):
    if not isinstance(payload, dict):
        raise MediaError("Type mismatch of '/', not in 'object'")
    if schema.get("additionalProperties") is False:
        extra = [k for k in payload if k not in schema["properties"]]
        if extra:
            raise MediaError(f"Additional or unevaluated properties '/{extra[0]}' at '/' not "
                             "allowed")


def embed(model, payload):
    dimension = DIMENSIONS.get(model, 768)
    if not isinstance(payload, dict):
        raise MediaError("Type mismatch of '/', not in 'object'")
    if model == "@cf/baai/bge-m3" and "contexts" in payload:
        texts = [c.get("text", "") for c in payload["contexts"]]
        return Answer({"response": [vector_for(t, dimension) for t in texts],
                       "shape": [len(texts), dimension], "pooling": "cls"})
    text = payload.get("text")
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, list):
        raise MediaError("required properties at '/' are 'text'")
    if len(texts) > 100:
        raise MediaError(f"Array is too long ({len(texts)} > 100) at '/text'")
    for index, item in enumerate(texts):
        if not isinstance(item, str) or not item:
            raise MediaError(f"String is too short (0 < 1) at '/text/{index}'")
    return Answer({"shape": [len(texts), dimension],
                   "data": [vector_for(t, dimension) for t in texts], "pooling": "mean"})


def _form_fields(body, content_type):
    """The fields of a multipart/form-data body (name -> text)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise MediaError("required properties at '/' are 'multipart'")
    return {part.get_param("name", header="content-disposition"):
            part.get_payload(decode=True).decode() for part in message.iter_parts()}


def _size(payload, schema):
    props = schema["properties"]
    sizes = []
    for key in ("width", "height"):
        value = payload.get(key, 1024)
        value = int(value) if isinstance(value, str) and value.isdigit() else value
        low, high = props.get(key, {}).get("minimum", 1), props.get(key, {}).get("maximum", 2048)
        if not isinstance(value, int) or not low <= value <= high:
            raise MediaError(f"Value {value} at '/{key}' is out of range {low}-{high}")
        sizes.append(value)
    return sizes


def draw(model, payload, body, content_type):
    schema = SCHEMAS[model]["input"]
    if "multipart" in schema["properties"]:  # FLUX.2: multipart/form-data only
        if not content_type.startswith("multipart/form-data"):
            raise MediaError("required properties at '/' are 'multipart'")
        form = _form_fields(body, content_type)
        if not form.get("prompt"):
            raise MediaError("required properties at '/' are 'prompt'")
        width, height = _size(form, {"properties": {}})
        seed = int(form.get("seed", 0))
        return Answer({"image": base64.b64encode(png(width, height, seed)).decode()})
    _check_keys(payload, schema)
    if not isinstance(payload.get("prompt"), str) or not payload["prompt"]:
        raise MediaError("required properties at '/' are 'prompt'")
    if "width" not in schema["properties"]:
        return Answer({"image": base64.b64encode(png(1024, 1024)).decode()})
    width, height = _size(payload, schema)
    return Answer(content_type="image/png",
                  chunks=[png(width, height, payload.get("seed", 0))])


def transcribe(model, payload, body, content_type):
    props = SCHEMAS[model]["input"].get("properties", {})
    if model == "@cf/deepgram/nova-3":
        if not content_type.startswith("audio/"):
            raise MediaError("Type mismatch of '/audio', not in 'object'")
        text = heard(body)
        seconds = wav_seconds(body) or 1.0
        words = [{**w, "confidence": 0.99} for w in _words(text, seconds)]
        return Answer({"results": {"channels": [{"alternatives": [
            {"transcript": text, "confidence": 0.99, "words": words}]}]}})
    if "task" in props:  # whisper-large-v3-turbo: base64
        audio = payload.get("audio") if isinstance(payload, dict) else None
        try:
            data = base64.b64decode(audio, validate=True)
        except (TypeError, ValueError):
            raise MediaError("Type mismatch of '/audio', not a base64 string") from None
        translate = payload.get("task") == "translate"
        text = heard(data, translate)
        if payload.get("initial_prompt"):
            text += f" Prompted with {len(payload['initial_prompt'])} characters."
        seconds = wav_seconds(data) or 1.0
        half = round(seconds / 2, 3)
        first, _, second = text.partition(" ")
        segments = [
            {"start": 0.0, "end": half, "text": first, "temperature": 0.0,
             "avg_logprob": -0.2, "compression_ratio": 1.1, "no_speech_prob": 0.01,
             "words": _words(first, half)},
            {"start": half, "end": round(seconds, 3), "text": second, "temperature": 0.0,
             "avg_logprob": -0.25, "compression_ratio": 1.2, "no_speech_prob": 0.02,
             "words": _words(second, seconds - half)}]
        info = {"language": payload.get("language", "en"), "language_probability": 0.98,
                "duration": seconds, "duration_after_vad": seconds}
        return Answer({"transcription_info": info, "text": text,
                       "word_count": len(text.split()), "segments": segments,
                       "vtt": _vtt(text, seconds)})
    if isinstance(payload, dict):  # whisper: a byte array
        audio = payload.get("audio")
        if not isinstance(audio, list) or not all(
                isinstance(b, int) and 0 <= b <= 255 for b in audio):
            raise MediaError("Type mismatch of '/audio', not in 'array'")
        data = bytes(audio)
    else:
        data = body
    text = heard(data)
    seconds = wav_seconds(data) or 1.0
    return Answer({"text": text, "word_count": len(text.split()),
                   "words": _words(text, seconds), "vtt": _vtt(text, seconds)})


_SPEECH_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac",
                 "flac": "audio/flac", "linear16": "audio/wav"}


def _encoded(text, encoding, container):
    if encoding == "mp3":
        return mp3(text)
    if encoding == "linear16":
        frames = bytes(2 * 24000 * max(1, len(text) // 20) // 10)
        if container == "wav":
            out = io.BytesIO()
            with wave.open(out, "wb") as audio:
                audio.setnchannels(1)
                audio.setsampwidth(2)
                audio.setframerate(24000)
                audio.writeframes(frames)
            return out.getvalue()
        return frames
    magic = {"opus": b"OggS", "flac": b"fLaC", "aac": b"\xff\xf1"}.get(encoding, b"")
    return magic + bytes(400 * max(3, len(text) // 20))


def speak(model, payload):
    schema = SCHEMAS[model]["input"]
    _check_keys(payload, schema)
    props = schema["properties"]
    key = "text" if "text" in props else "prompt"
    text = payload.get(key)
    if not isinstance(text, str) or not text:
        raise MediaError(f"required properties at '/' are '{key}'")
    for name in ("speaker", "encoding", "container"):
        if name in payload and payload[name] not in props.get(name, {}).get("enum", []):
            raise MediaError(f"Value '{payload[name]}' at '/{name}' is not in the enum")
    if key == "prompt":  # melotts: base64 MP3 in JSON
        return Answer({"audio": base64.b64encode(mp3(text)).decode()})
    encoding = payload.get("encoding", "mp3")
    data = _encoded(text, encoding, payload.get("container", "none"))
    content_type = _SPEECH_TYPES[encoding]
    if encoding == "linear16" and payload.get("container", "none") == "none":
        content_type = "audio/l16"
    return Answer(content_type=content_type,
                  chunks=[data[i:i + 4096] for i in range(0, len(data), 4096)])


def answer(record, model, payload, body, content_type):
    """The fake's reply for a model of a task other than Text Generation."""
    if model not in SCHEMAS:
        raise MediaError("this fake has no schema for that model")
    task = record["task"]["name"]
    if task == "Text Embeddings":
        return embed(model, payload)
    if task == "Text-to-Image":
        return draw(model, payload, body, content_type)
    if task == "Automatic Speech Recognition":
        return transcribe(model, payload, body, content_type)
    return speak(model, payload)


def run_body(result):
    """Cloudflare's success envelope, as bytes."""
    return json.dumps({"result": result, "success": True, "errors": [], "messages": []},
                      separators=(",", ":")).encode()
