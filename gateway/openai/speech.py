"""OpenAI's text-to-speech over Workers AI's Text-to-Speech models: dicts in, dicts out.

From the model's input schema: whether the text goes in `text` (Deepgram's aura) or
`prompt` (melotts), the voices it has (`speaker`'s enum), the encodings and containers
it can produce (`encoding`, `container`), and whether it has `speed`. A model without
`speaker` has one voice, which every `voice` names. melotts has no `encoding`: it
speaks MP3 only.
"""
import base64
import binascii

from gateway.cloudflare.model_inputs import InputSchema
from gateway.errors import InvalidRequestError

# The Content-Type OpenAI answers each response_format with.
CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac",
                 "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}
# OpenAI's formats in the `encoding` / `container` terms of Deepgram's schema; pcm is OpenAI's
# raw 24 kHz 16-bit little-endian.
ENCODINGS = {"mp3": ("mp3", None), "opus": ("opus", "ogg"), "aac": ("aac", None),
             "flac": ("flac", None), "wav": ("linear16", "wav"), "pcm": ("linear16", "none")}
PCM_RATE = 24000


class NotAudio(ValueError):
    """Workers AI answered 200 with something that is not audio."""


def speech_input(request, model, schema):
    """The Workers AI input for a validated speech request; 400 for what the model lacks."""
    inputs = InputSchema(schema)
    key = "prompt" if inputs.known and "text" not in inputs.props and inputs.has("prompt") \
        else "text"
    payload = {key: request["input"]}
    voices = inputs.enum("speaker")
    if voices:
        if request["voice"] not in voices:
            raise InvalidRequestError(
                f"The model '{model}' has no voice '{request['voice']}'; its voices are: "
                f"{', '.join(voices)}.", param="voice")
        payload["speaker"] = request["voice"]
    fmt = request["response_format"]
    encodings = inputs.enum("encoding")
    if encodings is None and inputs.known:
        if fmt != "mp3":
            raise InvalidRequestError(f"The model '{model}' speaks mp3 only; 'response_format' "
                                      f"'{fmt}' is not available.", param="response_format")
    else:
        encoding, container = ENCODINGS[fmt]
        containers = inputs.enum("container")
        if (encodings and encoding not in encodings) or (
                container and containers is not None and container not in containers):
            raise InvalidRequestError(f"The model '{model}' cannot produce {fmt}.",
                                      param="response_format")
        payload["encoding"] = encoding
        if container:
            payload["container"] = container
        if fmt == "pcm" and inputs.has("sample_rate"):
            payload["sample_rate"] = PCM_RATE
    if request["speed"] != 1:
        if not (inputs.known and inputs.has("speed")):
            raise InvalidRequestError(f"The model '{model}' has no speed setting; send 'speed' "
                                      "1 or leave it out.", param="speed")
        payload["speed"] = request["speed"]
    return payload


def audio_in_json(body):
    """The audio in a JSON answer (melotts: `result.audio`, base64)."""
    result = body.get("result", body) if isinstance(body, dict) else None
    encoded = result.get("audio") if isinstance(result, dict) else None
    if not isinstance(encoded, str):
        raise NotAudio("no audio in the answer")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise NotAudio("the audio is not base64") from None
    if not data:
        raise NotAudio("the audio is empty")
    return data
