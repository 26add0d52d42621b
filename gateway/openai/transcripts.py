"""OpenAI's transcriptions and translations over Workers AI's speech recognition models.

The upload reaches each model in the form its input schema takes audio: a byte array
(`whisper`, `whisper-tiny-en`), a base64 string (`whisper-large-v3-turbo`, which also
takes `task: "translate"`, `language` and `initial_prompt`), or the raw bytes with the
audio content type (`deepgram/nova-3`). The answers (Whisper's `{text, segments, words,
vtt, transcription_info}`, Deepgram's `{results: {channels: [...]}}`) become OpenAI's
`json`, `text`, `srt`, `vtt` or `verbose_json`. Dicts in, dicts (or text) out.
"""
import base64
import io
import wave
from dataclasses import dataclass, field

from gateway.cloudflare.model_inputs import BASE64, RAW, InputSchema
from gateway.errors import InvalidRequestError
from gateway.openai import subtitles

# Only when a model's schema cannot be read: the one audio form that is not the REST
# default (raw bytes), from Cloudflare's AI-SDK provider ("whisper-large-v3-turbo requires
# base64 audio"). A table of model names, kept as a last resort.
LAST_RESORT_AUDIO_FORMS = {"@cf/openai/whisper-large-v3-turbo": BASE64}


class UnreadableTranscript(ValueError):
    """Cloudflare answered 200 with something that is not a transcript."""


@dataclass
class Transcript:
    """What a speech recognition answer boils down to."""

    text: str
    language: str | None = None
    duration: float | None = None
    segments: list = field(default_factory=list)
    words: list = field(default_factory=list)
    vtt: str | None = None


def _refuse(model, param, what):
    return InvalidRequestError(f"The model '{model}' does not take {what}.", param=param)


def upstream_request(audio, content_type, form, model, schema, translate=False):
    """(JSON payload or None, raw bytes or None) for one upload; 400 for what the model lacks."""
    inputs = InputSchema(schema)
    style = inputs.audio_form() or LAST_RESORT_AUDIO_FORMS.get(model, RAW)
    if style == RAW:
        for param in ("language", "prompt"):
            if form.get(param):
                raise _refuse(model, param, f"'{param}' (it takes the audio bytes alone)")
        if translate:
            raise _refuse(model, "model", "translations (it has no translate task)")
        return None, audio
    payload = {"audio": base64.b64encode(audio).decode("ascii") if style == BASE64
               else list(audio)}
    if translate:
        if "translate" not in (inputs.enum("task") or ([] if inputs.known else ["translate"])):
            raise _refuse(model, "model", "translations (its schema has no translate task)")
        payload["task"] = "translate"
    if form.get("language"):
        if not inputs.has("language"):
            raise _refuse(model, "language", "'language'")
        payload["language"] = form["language"]
    if form.get("prompt"):
        if not inputs.has("initial_prompt"):
            raise _refuse(model, "prompt", "a prompt")
        payload["initial_prompt"] = form["prompt"]
    return payload, None


# The container signatures of the formats OpenAI's transcription route takes (flac, mp3, mp4,
# m4a, ogg, wav, webm), from each format's specification of its first bytes.
_SIGNATURES = ((b"fLaC", "audio/flac"), (b"OggS", "audio/ogg"), (b"ID3", "audio/mpeg"),
               (b"\x1a\x45\xdf\xa3", "audio/webm"))


def sniff_audio_type(audio):
    """The audio MIME type read off the file's first bytes, else None.

    OpenAI's SDKs send bytes given without a file name as `application/octet-stream`, and a
    browser blob has no extension; a model that takes the raw bytes (nova-3) needs the type.
    """
    if audio[:4] == b"RIFF" and audio[8:12] == b"WAVE":
        return "audio/wav"
    if audio[4:8] == b"ftyp":
        return "audio/mp4"
    if len(audio) > 1 and audio[0] == 0xFF and audio[1] & 0xE0 == 0xE0:  # an MPEG frame sync
        return "audio/mpeg"
    return next((kind for magic, kind in _SIGNATURES if audio.startswith(magic)), None)


def wav_seconds(audio):
    """The length of a WAV upload, else None (for models that do not say)."""
    try:
        with wave.open(io.BytesIO(audio)) as reader:
            return reader.getnframes() / reader.getframerate()
    except (wave.Error, EOFError, ZeroDivisionError):
        return None


def _number(value):
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def _words(items):
    words = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("word"), str):
            start, end = _number(item.get("start")), _number(item.get("end"))
            if start is not None and end is not None:
                words.append({"word": item["word"], "start": start, "end": end})
    return words


def _segments(items):
    segments = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            continue
        start, end = _number(item.get("start")), _number(item.get("end"))
        if start is None or end is None:
            continue
        segments.append({"start": start, "end": end, "text": item["text"],
                         "temperature": _number(item.get("temperature")) or 0.0,
                         "avg_logprob": _number(item.get("avg_logprob")) or 0.0,
                         "compression_ratio": _number(item.get("compression_ratio")) or 0.0,
                         "no_speech_prob": _number(item.get("no_speech_prob")) or 0.0,
                         "words": _words(item.get("words"))})
    return segments


def read_transcript(body):
    """A Transcript from Whisper's or Deepgram's answer."""
    result = body.get("result", body) if isinstance(body, dict) else None
    if not isinstance(result, dict):
        raise UnreadableTranscript("result is not an object")
    if isinstance(result.get("results"), dict):  # Deepgram
        try:
            channel = result["results"]["channels"][0]
            best = channel["alternatives"][0]
        except (KeyError, IndexError, TypeError):
            raise UnreadableTranscript("no alternatives") from None
        if not isinstance(best.get("transcript"), str):
            raise UnreadableTranscript("no transcript")
        words = _words(best.get("words"))
        metadata = result.get("metadata") if isinstance(result.get("metadata"), dict) else {}
        return Transcript(best["transcript"], channel.get("detected_language"),
                          _number(metadata.get("duration")) or (words[-1]["end"] if words
                                                                else None), [], words)
    if not isinstance(result.get("text"), str):
        raise UnreadableTranscript("no text")
    info = result.get("transcription_info")
    info = info if isinstance(info, dict) else {}
    segments = _segments(result.get("segments"))
    words = _words(result.get("words")) or [w for s in segments for w in s["words"]]
    ends = [s["end"] for s in segments] + [w["end"] for w in words]
    duration = _number(info.get("duration")) or (max(ends) if ends else None)
    vtt = result.get("vtt") if isinstance(result.get("vtt"), str) else None
    language = info.get("language") if isinstance(info.get("language"), str) else None
    return Transcript(result["text"], language, duration, segments, words, vtt)


def _verbose(transcript, task, language, with_words):
    segments = [{"id": index, "seek": 0, "tokens": [],
                 **{k: v for k, v in segment.items() if k != "words"}}
                for index, segment in enumerate(transcript.segments)]
    body = {"task": task, "language": transcript.language or language or "unknown",
            "duration": transcript.duration or 0.0, "text": transcript.text}
    if segments:
        body["segments"] = segments
    if with_words and transcript.words:
        body["words"] = transcript.words
    if transcript.duration is not None:
        body["usage"] = {"type": "duration", "seconds": transcript.duration}
    return body


def render(transcript, response_format, *, task="transcribe", language=None, with_words=False):
    """(body, mimetype) in OpenAI's `response_format`: a dict for the JSON ones, else text."""
    if response_format == "json":
        body = {"text": transcript.text}
        if transcript.duration is not None and task == "transcribe":
            body["usage"] = {"type": "duration", "seconds": transcript.duration}
        return body, "application/json"
    if response_format == "verbose_json":
        return _verbose(transcript, task, language, with_words), "application/json"
    if response_format == "text":
        return transcript.text.strip() + "\n", "text/plain"
    timed = subtitles.cues(transcript.text, transcript.segments, transcript.words,
                           transcript.duration)
    if response_format == "vtt":
        return transcript.vtt or subtitles.vtt(timed), "text/plain"
    return subtitles.srt(timed), "text/plain"  # OpenAI sends all three text formats so
